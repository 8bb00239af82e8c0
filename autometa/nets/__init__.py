"""Networks usable through ``torch.func.functional_call``."""

from autometa.nets._nets import (
    MLP,
    BatchNorm2d,
    Conv4,
    build_net,
    check_model_spec,
    conv_block,
    functional_forward,
    no_buffer_updates,
    params_of,
)

__all__ = ["MLP", "BatchNorm2d", "Conv4", "build_net", "check_model_spec", "conv_block", "functional_forward",
           "no_buffer_updates", "params_of"]
