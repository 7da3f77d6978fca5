"""Live driving (the paper's live system): camera frames in, avatar frames out, one at a time.

Each frame: MediaPipe Holistic finds the person, the body template is fitted to that frame's
keypoints alone (a short fit: a few iterations per stage), MDA aligns the pose (continuing its
state from the previous frame), and the avatar renders it, carrying its temporal features.
"""

from __future__ import annotations

import numpy as np
import torch

from ram_avatar.mda import DEFAULT_STRENGTH
from ram_avatar.pipelines.ram_avatar_pipeline import Driving, RamAvatarPipeline, RenderedFrame, _StreamState


class LiveSession:
    """``session(frame) -> RenderedFrame | None`` for consecutive frames of one camera.

    Args:
        pipe: the avatar.
        mda_strength: 0..1 (ignored when the avatar has no MDA).
        fit_iters: iterations of each fitting stage per frame (speed against accuracy).
        detect_size: frames are downscaled to this longer side for detection.
    """

    def __init__(self, pipe: RamAvatarPipeline, mda_strength: float = DEFAULT_STRENGTH, fit_iters: int = 25, detect_size: int = 384):
        from ram_avatar.tracking.detect import PersonDetector

        self.pipe, self.mda_strength, self.fit_iters, self.detect_size = pipe, mda_strength, fit_iters, detect_size
        self.detector = PersonDetector(others_every=0)
        self.state: _StreamState | None = None
        self.count = 0

    def close(self) -> None:
        self.detector.close()

    @torch.no_grad()
    def pose_of(self, frame: np.ndarray):
        """The body pose (batch 1) of the person in an (H, W, 3) uint8 RGB frame, or None."""
        import cv2

        from ram_avatar.tracking.crop import source_intrinsics
        from ram_avatar.tracking.fit import fit_body

        H, W = frame.shape[:2]
        scale = min(1.0, self.detect_size / max(H, W))
        small = cv2.resize(frame, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else frame
        found = self.detector(np.ascontiguousarray(small), (H, W))
        if not found.found:
            return None
        keypoints = {k: getattr(found, k)[None].astype(np.float32) for k in ("body", "left_hand", "right_hand")}
        K = source_intrinsics((H, W))[None]
        with torch.enable_grad():  # the fit optimises
            fit = fit_body(self.pipe.template, keypoints, K, (H, W), max_iters=self.fit_iters, progress=False)
        return fit.pose

    def __call__(self, frame: np.ndarray) -> RenderedFrame | None:
        """Render the avatar in the pose of the person in ``frame`` (None when nobody is seen)."""
        pose = self.pose_of(frame)
        if pose is None:
            return None
        driving = Driving(pose.to("cpu"), self.pipe.fps, "live")
        if self.state is None:  # the framing height: the first frame's
            self.state = _StreamState(self.pipe, driving)
        rendered = self.pipe._render_chunk(driving, slice(0, 1), self.mda_strength, False, (1.0, 1.0, 1.0), self.state)[0]
        rendered.index = self.count
        self.count += 1
        return rendered
