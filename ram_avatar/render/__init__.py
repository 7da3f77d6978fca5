"""Rendering: OpenCV cameras and a fast vectorised pure-PyTorch rasterizer.

``rasterize`` gives the nearest face, perspective-correct barycentrics and depth per pixel;
``interpolate`` turns those into attribute maps, ``render_maps`` into the UV / canonical maps the
avatar model consumes, and ``soft_silhouette`` is a differentiable mask for fitting.
"""

from ram_avatar.render.camera import Camera, intrinsics
from ram_avatar.render.rasterizer import Fragments, interpolate, rasterize, render_maps, soft_silhouette

__all__ = ["Camera", "Fragments", "interpolate", "intrinsics", "rasterize", "render_maps", "soft_silhouette"]
