import pytest
import torch
from accelerate import Accelerator

from xai_train.callback import Callback, CallbackList, NoisePlan, TrainState, compose_grad_fns


class Recorder(Callback):
    def __init__(self, name, log, factor=None, key=None):
        self.name, self.log, self.factor, self.state_key = name, log, factor, key
        self.counter = 0

    def on_train_start(self, state):
        self.log.append((self.name, "start"))

    def on_generator_forward(self, state, fake, d_fake, discriminator):
        self.log.append((self.name, "gen"))
        if self.factor is None:
            return None
        return lambda g: g * self.factor

    def on_loss(self, state, loss_map, role):
        self.log.append((self.name, role))
        return None if self.factor is None else loss_map * self.factor

    def on_diffusion_noise(self, state, clean, plan):
        return None if self.factor is None else plan.replace(loss_weight=torch.full_like(clean, self.factor))

    def state_dict(self):
        return {"counter": self.counter}

    def load_state_dict(self, state):
        self.counter = state["counter"]


@pytest.fixture
def state():
    return TrainState(Accelerator(cpu=True), max_steps=5)


def test_hooks_run_in_list_order(state):
    log = []
    callbacks = CallbackList([Recorder("a", log), Recorder("b", log)])
    callbacks.on_train_start(state)
    callbacks.on_loss(state, torch.ones(3), "generator")
    assert log == [("a", "start"), ("b", "start"), ("a", "generator"), ("b", "generator")]


def test_none_means_no_change(state):
    callbacks = CallbackList([Recorder("a", [])])
    loss = torch.arange(3.0)
    assert callbacks.on_loss(state, loss, "generator") is loss
    plan = NoisePlan(noise=torch.zeros(1, 1, 2, 2), timesteps=torch.zeros(1, dtype=torch.long))
    assert callbacks.on_diffusion_noise(state, torch.zeros(1, 1, 2, 2), plan) is plan
    fake = torch.ones(2, 1, 1, 3, requires_grad=True)
    assert callbacks.on_generator_forward(state, fake, torch.zeros(2, 1), torch.nn.Identity()) is None
    fake.sum().backward()
    assert torch.equal(fake.grad, torch.ones(2, 1, 1, 3))


def test_loss_and_noise_changes_chain(state):
    callbacks = CallbackList([Recorder("a", [], 2.0), Recorder("b", [], 3.0)])
    assert torch.equal(callbacks.on_loss(state, torch.ones(2), "denoiser"), torch.full((2,), 6.0))
    plan = NoisePlan(noise=torch.zeros(1, 1, 2, 2), timesteps=torch.zeros(1, dtype=torch.long))
    out = callbacks.on_diffusion_noise(state, torch.zeros(1, 1, 2, 2), plan)
    assert torch.equal(out.loss_weight, torch.full((1, 1, 2, 2), 3.0))


def test_grad_fns_compose_into_one_hook(state):
    callbacks = CallbackList([Recorder("a", [], 2.0), Recorder("b", [], 5.0), Recorder("c", [])])
    fake = torch.ones(2, 1, 1, 3, requires_grad=True)
    out = fake * 1.0
    grad_fn = callbacks.on_generator_forward(state, out, torch.zeros(2, 1), torch.nn.Identity())
    assert grad_fn is not None
    (out * torch.arange(3.0)).sum().backward()
    assert torch.equal(fake.grad, 10.0 * torch.arange(3.0).expand(2, 1, 1, 3))


def test_compose_order():
    f = compose_grad_fns([lambda g: g + 1, None, lambda g: g * 2])
    assert f(torch.tensor(1.0)) == 4.0
    assert compose_grad_fns([None, None]) is None


def test_on_loss_shape_change_is_an_error(state):
    class Bad(Callback):
        def on_loss(self, state, loss_map, role):
            return loss_map.mean()

    with pytest.raises(ValueError, match="Bad.on_loss returned shape"):
        CallbackList([Bad()]).on_loss(state, torch.ones(4), "generator")


def test_state_dict_round_trip(tmp_path):
    a, b = Recorder("a", [], key="a"), Recorder("b", [], key="b")
    a.counter, b.counter = 3, 7
    CallbackList([a, b]).save(tmp_path)
    a2, b2 = Recorder("a", [], key="a"), Recorder("b", [], key="b")
    CallbackList([a2, b2]).load(tmp_path)
    assert (a2.counter, b2.counter) == (3, 7)


def test_duplicate_state_keys_rejected():
    with pytest.raises(ValueError, match="state_key"):
        CallbackList([Recorder("a", [], key="x"), Recorder("b", [], key="x")])


def test_state_round_trips_through_accelerate_save_state(tmp_path):
    accelerator = Accelerator(cpu=True)
    cb = Recorder("a", [], key="a")
    callbacks = CallbackList([cb])
    callbacks.register_for_checkpointing(accelerator)
    callbacks.register_for_checkpointing(accelerator)  # idempotent
    cb.counter = 11
    accelerator.save_state(str(tmp_path / "ckpt"))
    cb.counter = 0
    accelerator.load_state(str(tmp_path / "ckpt"))
    assert cb.counter == 11
    assert len(accelerator._save_model_state_pre_hook) == 1


def test_request_stop_sets_trigger(state):
    assert not state.should_stop()
    state.request_stop()
    assert state.should_stop()
