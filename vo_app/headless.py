"""Running the pipeline without a window: progress bar, optional mp4 of the tracks view, outputs."""

from __future__ import annotations

from pathlib import Path

import cv2
from tqdm import tqdm

from frontend.draw import draw_tracks
from models.errors import TraqPointError


class TrackVideo:
    """Writes the tracks view (trails coloured by age) frame by frame to an mp4."""

    def __init__(self, path: str | Path, fps: float = 10.0) -> None:
        self.path, self.fps, self.writer = Path(path), fps, None

    def add(self, pipeline, step) -> None:
        img = draw_tracks(step.frame.image, pipeline.tracker.tracks, step.frame.keypoints.numpy())
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = img.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                raise TraqPointError(f"cannot write video {self.path}")
        self.writer.write(img)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def run_headless(pipeline, out: str | Path, video: str | None = None, export_ply: bool = False) -> dict:
    """Run to the end (Ctrl-C stops early and still writes the outputs); return the metrics."""
    total = pipeline.source.num_frames
    if pipeline.max_frames is not None and total is not None:
        total = min(total, pipeline.max_frames)
    writer = TrackVideo(video) if video else None
    bar = tqdm(total=total, desc=f"VO {pipeline.extractor.name}", unit="frame", dynamic_ncols=True)
    try:
        for step in pipeline.run():
            if writer:
                writer.add(pipeline, step)
            bar.update(1)
            bar.set_postfix(fps=f"{step.fps:.1f}", tracks=step.stats["active"], kf=pipeline.odometry.keyframes)
    except KeyboardInterrupt:
        pass
    finally:
        bar.close()
        if writer:
            writer.close()
    return pipeline.write_outputs(out, export_ply=export_ply)
