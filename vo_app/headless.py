"""Running the pipeline without a window: progress bar, optional mp4 of the tracks view, outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
from tqdm import tqdm

from frontend.draw import draw_tracks
from models.errors import TraqPointError

log = logging.getLogger(__name__)


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


def run_headless(
    pipeline, out: str | Path, video: str | None = None, export_ply: bool = False
) -> tuple[dict, bool]:
    """Run to the end and write the outputs; return ``(metrics, interrupted)``.

    Ctrl-C stops early and still writes every output; ``results.json`` then says
    ``"partial": true`` and ``"ended": "interrupted (Ctrl-C)"`` (the caller exits with 130).
    A live source that stops delivering frames ends the run with its reason in ``"ended"``.
    An error in the middle of the run (a bad frame the source cannot skip, a bug) also writes
    what was done, ``"partial": true`` with the error in ``"ended"``, and is then raised again.
    """
    total = pipeline.source.num_frames
    if pipeline.max_frames is not None and total is not None:
        total = min(total, pipeline.max_frames)
    writer = TrackVideo(video) if video else None
    bar = tqdm(total=total, desc=f"VO {pipeline.extractor.name}", unit="frame", dynamic_ncols=True)
    interrupted, failure = False, None
    try:
        for step in pipeline.run():
            if writer:
                writer.add(pipeline, step)
            bar.update(1)
            bar.set_postfix(fps=f"{step.fps:.1f}", tracks=step.stats["active"], kf=pipeline.odometry.keyframes)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as err:  # noqa: BLE001 - written down below, then raised again
        failure = err
    finally:
        bar.close()
        if writer:
            writer.close()
    if failure is None:
        return pipeline.write_outputs(out, export_ply=export_ply, extra=run_end(pipeline, interrupted)), interrupted
    if pipeline.summary.rows:  # lose nothing: the frames done before the error
        try:
            pipeline.write_outputs(out, extra={"partial": True, "ended": f"error: {failure}"})
            log.warning("the %d frames done before the error are in %s", len(pipeline.summary.rows), out)
        except Exception as err:  # noqa: BLE001 - the original error is the one to report
            log.warning("could not write the partial outputs: %s", err)
    raise failure


def run_end(pipeline, interrupted: bool) -> dict:
    """The ``partial`` / ``ended`` keys of ``results.json`` (why the run stopped), plus live-source stalls."""
    source = pipeline.source
    extra = {"stalls": source.stalls} if hasattr(source, "stalls") else {}
    if interrupted:
        return {"partial": True, "ended": "interrupted (Ctrl-C)", **extra}
    if getattr(source, "stop_reason", None):  # a live source that stopped delivering: its whole stream
        return {"partial": False, "ended": source.stop_reason, **extra}
    if pipeline.max_frames is not None and len(pipeline.summary.rows) >= pipeline.max_frames:
        return {"partial": False, "ended": f"--max-frames {pipeline.max_frames} reached", **extra}
    return {"partial": False, "ended": "end of input", **extra}
