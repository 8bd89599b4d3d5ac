"""Drop-in callbacks for xai-train trainers and hand-written Accelerate loops.

Built only on ``xai_train``'s public API.
"""
