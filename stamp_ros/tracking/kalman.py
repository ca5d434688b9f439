"""A constant-velocity Kalman filter: an object's filtered position and velocity.

The tracker keeps one per track in the image (working pixels, camera motion removed: see
:mod:`.tracker`) to predict where a hidden object is, and one in 3D (metres) once the caller
lifts the track to 3D (:meth:`~stamp_ros.tracking.QueryTracker.observe_3d`). Constant velocity
with white-noise acceleration (``accel`` per axis, units/s^2) is the usual model for objects a
robot follows over a few seconds; anything richer needs more than centroids to be observable.
Time is in seconds and may step unevenly (frames are dropped when the tracker falls behind).
"""

from __future__ import annotations

import numpy as np


class ConstantVelocity:
    """State (position, velocity) in ``dim`` dimensions; position measurements only."""

    def __init__(self, position: np.ndarray, t: float, *, accel: float, noise: float,
                 velocity_sigma: float) -> None:
        p = np.asarray(position, np.float64).ravel()
        self.dim = len(p)
        self.x = np.concatenate([p, np.zeros(self.dim)])
        """State: position then velocity."""
        self.P = np.diag([noise**2] * self.dim + [velocity_sigma**2] * self.dim)
        self.t = float(t)
        """Time (s) of the state."""
        self.accel = float(accel)
        self.R = np.eye(self.dim) * noise**2
        self.updates = 1

    def _matrices(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        n = self.dim
        F = np.eye(2 * n)
        F[:n, n:] = np.eye(n) * dt
        q = self.accel**2
        Q = np.zeros((2 * n, 2 * n))  # discrete white-noise acceleration
        Q[:n, :n] = np.eye(n) * q * dt**4 / 4
        Q[:n, n:] = Q[n:, :n] = np.eye(n) * q * dt**3 / 2
        Q[n:, n:] = np.eye(n) * q * dt**2
        return F, Q

    def predicted(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(state, covariance) at time ``t`` without changing the filter."""
        dt = max(0.0, float(t) - self.t)
        F, Q = self._matrices(dt)
        return F @ self.x, F @ self.P @ F.T + Q

    def update(self, position: np.ndarray, t: float) -> None:
        """Predict to ``t`` and correct with a measured position (an older ``t`` than the state's
        is taken as the state's time: measurements arrive in order or not at all)."""
        x, P = self.predicted(t)
        z = np.asarray(position, np.float64).ravel()
        n = self.dim
        S = P[:n, :n] + self.R
        K = P[:, :n] @ np.linalg.inv(S)
        self.x = x + K @ (z - x[:n])
        self.P = (np.eye(2 * n) - K[:, :n] @ np.eye(n, 2 * n)) @ P
        self.t = max(self.t, float(t))
        self.updates += 1

    def shift(self, offset: np.ndarray) -> None:
        """Move the position by ``offset`` keeping the velocity (the measured point moved on
        the object: a new model mask has another centroid than the carried one)."""
        self.x[:self.dim] += np.asarray(offset, np.float64).ravel()

    @property
    def position(self) -> np.ndarray:
        return self.x[:self.dim].copy()

    @property
    def velocity(self) -> np.ndarray:
        return self.x[self.dim:].copy()

    def position_at(self, t: float) -> np.ndarray:
        return self.predicted(t)[0][:self.dim]
