"""check_xaigan_options mirrors XAIGradientMask's arguments: same names, order, kinds and defaults."""

import inspect

from callbacks import XAIGradientMask
from xai_train.xaigan import check_xaigan_options


def test_the_check_and_the_callback_take_the_same_options():
    check = list(inspect.signature(check_xaigan_options).parameters.values())
    callback = [
        p
        for name, p in inspect.signature(XAIGradientMask.__init__).parameters.items()
        if name not in ("self", "state_key")
    ]
    assert [(p.name, p.kind, p.default) for p in check] == [(p.name, p.kind, p.default) for p in callback]
    assert len(check) == 14  # a control: the comparison sees every option
