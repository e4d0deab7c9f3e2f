"""Local vision solvers for the rotate ("whirl") and slide captchas: pure functions of the image bytes.

CPU-bound (a few ms to a few tens of ms each): call them off the event loop. They use OpenCV, whose own thread
pool a worker process may want to limit with `cv2.setNumThreads(1)`.
"""

from addon.solving.vision.common import VisionError, VisionResult
from addon.solving.vision.rotate import solve_rotate
from addon.solving.vision.slide import solve_slide

__all__ = ["VisionError", "VisionResult", "solve_rotate", "solve_slide"]
