"""Small-but-fair options per method for 32-64 px test images (the defaults target 224 px)."""

from __future__ import annotations

from typing import Any

FAST: dict[str, dict[str, Any]] = {
    "conditional_occlusion": {"window": 8, "stride": 4},
    "context_agnostic_occlusion": {"window": 8, "stride": 4},
    "pairwise_occlusion": {"n_erasures": 64},
    "rise": {"n_masks": 128},
    "gradcam": {},
    "interaction_cam": {},
    "input_x_gradient": {},
    "smoothgrad": {"n_samples": 8},
    "averaged_transforms": {"steps": 5},
    "integrated_gradients": {"n_steps": 16},
    "pixel_invariance": {"n_augmentations": 64, "epochs": 30},
}

# Options under which "most of the mass lies in the left half" is a fair expectation for a model
# that only sees the left half.
LOCALISATION: dict[str, dict[str, Any]] = {
    **FAST,
    "pixel_invariance": {"n_augmentations": 128, "epochs": 100},
}
