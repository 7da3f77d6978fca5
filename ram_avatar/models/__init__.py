"""The avatar networks (paper sections 3.1, 3.2, 3.4), shipped as Hugging Face Hub classes.

``RamAvatar`` (the renderer of one person), ``TemporalDiscriminator`` (training only) and
``BaselineUNet`` (the plain U-Net comparison), and the motion models ``PoseVAE`` (the pose prior)
and ``SubjectPoseDecoder`` (motion distribution align) save / load with ``save_pretrained`` /
``from_pretrained`` (safetensors only); their parts are plain modules.
"""

from ram_avatar.models.avatar import RamAvatar
from ram_avatar.models.baseline_unet import BaselineUNet, PlainUNet
from ram_avatar.models.configs import CONFIGS, config_image_size, config_names, get_config
from ram_avatar.models.discriminator import TemporalDiscriminator, triplet
from ram_avatar.models.dual_attention import CrissCrossAttention, DualAttention, attention_size, criss_cross
from ram_avatar.models.face_map import FaceMap, draw_face_mesh, face_mesh_triangles, flat_face_layout
from ram_avatar.models.hand_map import HandMap, draw_hand_skeleton
from ram_avatar.models.inputs import face_points_from_keypoints, prepare_inputs, template_hand_keypoints
from ram_avatar.models.neural_texture import NeuralTexture
from ram_avatar.models.pose_decoder import SubjectPoseDecoder
from ram_avatar.models.pose_vae import PoseVAE
from ram_avatar.models.style_unet import StyleUNet

__all__ = [
    "CONFIGS",
    "BaselineUNet",
    "CrissCrossAttention",
    "DualAttention",
    "FaceMap",
    "HandMap",
    "NeuralTexture",
    "PlainUNet",
    "PoseVAE",
    "RamAvatar",
    "SubjectPoseDecoder",
    "StyleUNet",
    "TemporalDiscriminator",
    "attention_size",
    "config_image_size",
    "config_names",
    "criss_cross",
    "draw_face_mesh",
    "draw_hand_skeleton",
    "face_mesh_triangles",
    "flat_face_layout",
    "face_points_from_keypoints",
    "get_config",
    "prepare_inputs",
    "template_hand_keypoints",
    "triplet",
]
