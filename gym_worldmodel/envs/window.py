"""``render_mode="human"``: a pygame window that shows an env's frames as it steps.

pygame (pygame-ce) comes with the ``play`` extra; the core package never imports it. The env
draws every frame of a step's chunk in turn, so the window plays the world's motion at its own
frame rate, and a row that starts an episode shows its first frame for a step's time. An env of
several rows shows them tiled in one grid, as Gymnasium's vector ``HumanRendering`` does. The
world envs, the simulator envs and the PettingZoo and SB3 adapters all draw in this window.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from gymnasium import logger
from gymnasium.error import DependencyNotInstalled

#: The window's longer side that frames are enlarged towards, in screen pixels: by a whole
#: factor, nearest neighbour (the world's pixels as they are, as ``rollout --scale`` enlarges
#: video), so 64 x 64 frames show at 8 x, 512 x 512, as ``play``'s default zoom does.
WINDOW_SIDE = 512


def import_pygame() -> Any:
    """The ``pygame`` module, or an error that names the extra to install."""
    try:
        import pygame
    except ImportError as err:
        raise DependencyNotInstalled(
            "render_mode='human' shows the frames in a pygame window, and pygame is not "
            "installed: pip install gym-worldmodel[play] (or render_mode='rgb_array', whose "
            "render() returns the frames)"
        ) from err
    return pygame


def tile(frames: np.ndarray) -> np.ndarray:
    """The rows' frames ``(B, T, H, W, 3)`` as one grid of them ``(T, H', W', 3)``.

    ``ceil(sqrt(B))`` columns, filled row by row (row ``i`` in cell ``divmod(i, columns)``), a
    black pixel between cells and black empty cells; one row is its own frames.
    """
    n, t, h, w, _ = frames.shape
    if n == 1:
        return frames[0]
    columns = math.ceil(math.sqrt(n))
    lines = math.ceil(n / columns)
    grid = np.zeros((t, lines * (h + 1) - 1, columns * (w + 1) - 1, 3), np.uint8)
    for i in range(n):
        line, column = divmod(i, columns)
        y, x = line * (h + 1), column * (w + 1)
        grid[:, y : y + h, x : x + w] = frames[i]
    return grid


def window_scale(height: int, width: int) -> int:
    """The whole factor that enlarges a ``height`` x ``width`` picture towards the window side."""
    return max(1, WINDOW_SIDE // max(height, width))


class Window:
    """The window an env draws in: opened by its first frame, closed by :meth:`close`.

    Frames are paced: each stays for ``1 / fps`` of the :meth:`show` that drew it, counted from
    when it appeared, so the time a step takes to compute is spent while its last frame shows.
    Closing the window (its close button) stops the drawing and the pacing: the env steps on at
    full speed, unseen, until :meth:`close` (``env.close()``), after which a new frame opens
    the window again.
    """

    def __init__(self, caption: str) -> None:
        self.pygame = import_pygame()
        self.caption = caption
        self.dismissed = False  # the user closed the window
        self._clock: Any = None  # pygame.time.Clock, from when the display starts
        self._rate = 0.0  # the frames a second of the frame on the screen (0: none yet)

    def show(self, frames: np.ndarray, fps: float) -> None:
        """Draw uint8 frames ``(T, H, W, 3)`` in turn, ``fps`` frames a second."""
        if self.dismissed:
            return
        pygame = self.pygame
        scale = window_scale(*frames.shape[1:3])
        screen = self._screen((frames.shape[2] * scale, frames.shape[1] * scale))
        for frame in frames:
            if pygame.event.get(pygame.QUIT):  # (other events are left to the user's loop)
                self.close()
                self.dismissed = True
                logger.warn("the env's window was closed: the env steps on without showing it")
                return
            big = frame.repeat(scale, axis=0).repeat(scale, axis=1)
            pygame.surfarray.blit_array(screen, big.transpose(1, 0, 2))  # pygame's (x, y)
            self._clock.tick(self._rate)  # the frame before has been up for its time
            pygame.display.flip()
            self._rate = fps

    def show_rows(self, frames: np.ndarray, fps: float) -> None:
        """Draw rows' frames ``(B, T, H, W, 3)`` tiled in one grid (:func:`tile`), in turn."""
        self.show(tile(frames), fps)

    def open_display(self) -> None:
        """Start pygame's display now, with the video driver this machine offers, if not started.

        A simulator env calls it before its simulator starts, so that a simulator drawing with
        pygame off screen (highway-env's viewer) finds the window's display started and keeps
        it. Where a driving simulator started the display first, it did so on the driver SDL
        picks, the window's (:mod:`gym_worldmodel.sources.highway`), so the window shows either
        way.
        """
        if self.dismissed:
            return
        # SDL's window surface in main memory, not an OpenGL texture: on Linux SDL would
        # otherwise make a GLX context to test the driver's vendor, which fails (and kills the
        # process) where MiniWorld has made its EGL context current, and a window closed later
        # leaves MiniWorld's frame buffer invalid. A 512-pixel window needs no acceleration.
        os.environ.setdefault("SDL_FRAMEBUFFER_ACCELERATION", "0")
        self.pygame.display.init()
        if self._clock is None:
            self._clock = self.pygame.time.Clock()

    def close(self) -> None:
        """Close the window, if this env opened one; calling it again does nothing."""
        if self._clock is not None and self.pygame.display.get_init():
            self.pygame.display.quit()
        self._clock, self._rate, self.dismissed = None, 0.0, False

    def _screen(self, size: tuple[int, int]) -> Any:
        """The window's surface at ``size`` (width, height), opened or resized as needed.

        pygame has one window per process: envs that show frames in the same process share it.
        """
        pygame = self.pygame
        self.open_display()
        screen = pygame.display.get_surface()
        if screen is None or screen.get_size() != size:
            screen = pygame.display.set_mode(size)
            pygame.display.set_caption(self.caption)
            driver = pygame.display.get_driver()
            if driver in ("offscreen", "dummy") and not os.environ.get("SDL_VIDEODRIVER"):
                logger.warn(
                    f"render_mode='human' found no display (pygame's video driver is "
                    f"{driver!r}): the window is drawn unseen and steps still wait for "
                    "metadata['render_fps']; make the env with render_mode='rgb_array' or None "
                    "on a machine without a display"
                )
        return screen
