"""The overlay in a window (`ks-run --show`), when this OpenCV has a GUI and there is a display."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from ks_runtime.core.errors import ConfigError


def display_problem() -> str | None:
    """Why a live window cannot open here (None when it can): no GUI in this OpenCV, or no display."""
    gui = [
        line.split(":", 1)[1].strip()
        for line in cv2.getBuildInformation().splitlines()
        if line.strip().startswith("GUI:")
    ]
    if gui and gui[0].upper() == "NONE":
        return (
            f"this OpenCV ({cv2.__version__}) has no GUI (opencv-python-headless); install opencv-python for "
            f"a window, or write the overlay to a file with --overlay FILE"
        )
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display here (DISPLAY is not set); write the overlay to a file with --overlay FILE"
    return None


class LiveView:
    """The overlay in a window (`--show`); `stopped` once the user presses q or Esc or closes it."""

    WINDOW = "ks-run"

    def __init__(self) -> None:
        problem = display_problem()
        if problem is None:
            try:
                cv2.namedWindow(self.WINDOW, cv2.WINDOW_NORMAL)
            except cv2.error as error:
                problem = f"OpenCV cannot open a window ({str(error).strip().splitlines()[-1]})"
        if problem is not None:
            raise ConfigError(f"--show: {problem}")
        self.stopped = False

    def write_frame(self, canvas: np.ndarray) -> None:
        """Show one overlay frame (BGR); notice a key press or a closed window."""
        if self.stopped:
            return
        cv2.imshow(self.WINDOW, canvas)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            self.stopped = True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.WINDOW)
        except cv2.error:
            pass
