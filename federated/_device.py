"""The platform's record of simulated devices: eligibility schedules, versions, upload counts.

Only what a real FL platform's on-device runtime knows about itself lives here
(charging, battery, storage, idleness, the model version it holds, how often it
uploaded today). Private logs and personal state belong to the task.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from federated._config import DeviceConfig

__all__ = ["DAY_S", "DevicePopulation"]

DAY_S = 86400.0


@dataclass
class DevicePopulation:
    """N simulated devices as columns (vectorised; index = device index of the task).

    Attributes
    ----------
    charge_start_h : ndarray, shape (N,), float64
        Hour of day the device is plugged in (daily).
    charge_hours : ndarray, shape (N,), float64
        How long it stays plugged in.
    battery_at_plug : ndarray, shape (N,), float64
        Battery fraction when plugged in.
    charge_rate_per_h : ndarray, shape (N,), float64
        Battery fraction gained per hour of charging.
    free_storage_mb : ndarray, shape (N,), float64
        Free storage.
    model_version : ndarray, shape (N,), int64
        Global model version the device last downloaded (-1: none yet).
    upload_day : ndarray, shape (N,), int64
        The simulated day ``uploads_on_day`` counts.
    uploads_on_day : ndarray, shape (N,), int64
        Uploads the device made on ``upload_day``.
    last_round : ndarray, shape (N,), int64
        The last round the device uploaded in (-1: none).
    """

    charge_start_h: np.ndarray
    charge_hours: np.ndarray
    battery_at_plug: np.ndarray
    charge_rate_per_h: np.ndarray
    free_storage_mb: np.ndarray
    model_version: np.ndarray
    upload_day: np.ndarray
    uploads_on_day: np.ndarray
    last_round: np.ndarray

    def __len__(self) -> int:
        return int(self.charge_start_h.shape[0])

    @classmethod
    def simulate(cls, n_devices: int, rng: np.random.Generator) -> DevicePopulation:
        """Realistic schedules: most plug in around 23:00 for 5–9 h; a fifth at random hours."""
        if n_devices < 1:
            raise ValueError(f"n_devices={n_devices} should be >= 1")
        night = rng.random(n_devices) < 0.8
        start = np.where(night, rng.normal(23.0, 1.5, n_devices), rng.uniform(0, 24, n_devices))
        return cls(
            charge_start_h=np.mod(start, 24.0),
            charge_hours=rng.uniform(5.0, 9.0, n_devices),
            battery_at_plug=rng.uniform(0.05, 0.7, n_devices),
            charge_rate_per_h=rng.uniform(0.15, 0.45, n_devices),
            free_storage_mb=rng.lognormal(np.log(4000.0), 1.2, n_devices),
            model_version=np.full(n_devices, -1, np.int64),
            upload_day=np.full(n_devices, -1, np.int64),
            uploads_on_day=np.zeros(n_devices, np.int64),
            last_round=np.full(n_devices, -1, np.int64),
        )

    def hours_plugged(self, now_s: float) -> np.ndarray:
        """Hours since today's plug-in (negative or beyond ``charge_hours``: unplugged); (N,)."""
        hour = (now_s % DAY_S) / 3600.0
        return np.mod(hour - self.charge_start_h, 24.0)

    def charging(self, now_s: float) -> np.ndarray:
        """Whether each device is plugged in at ``now_s``; bool (N,)."""
        return self.hours_plugged(now_s) < self.charge_hours

    def battery(self, now_s: float) -> np.ndarray:
        """Battery fraction while charging (unplugged devices: their plug-in level); (N,)."""
        plugged = self.hours_plugged(now_s)
        gained = np.where(plugged < self.charge_hours, plugged * self.charge_rate_per_h, 0.0)
        return np.minimum(1.0, self.battery_at_plug + gained)

    def eligible(self, now_s: float, config: DeviceConfig,
                 rng: np.random.Generator) -> np.ndarray:
        """Which devices may train at ``now_s`` (charging, battery, storage, idle, night).

        Idleness is drawn fresh per check-in from ``rng``. Returns bool (N,).
        """
        n = len(self)
        ok = self.free_storage_mb >= config.min_free_storage_mb
        if config.require_charging:
            ok &= self.charging(now_s)
        ok &= self.battery(now_s) >= config.min_battery
        is_night = _is_night(now_s, config)
        if config.require_night and not is_night:
            return np.zeros(n, bool)
        if config.require_idle:
            p = config.idle_probability_night if is_night else config.idle_probability_day
            ok &= rng.random(n) < p
        return ok

    def under_daily_cap(self, now_s: float, max_uploads_per_day: int) -> np.ndarray:
        """Whether each device may still upload today; bool (N,)."""
        day = int(now_s // DAY_S)
        return (self.upload_day != day) | (self.uploads_on_day < max_uploads_per_day)

    def record_uploads(self, devices: np.ndarray, round_: int, now_s: float) -> None:
        """Count one upload for each of ``devices`` (int64 (B,)) on today's tally."""
        day = int(now_s // DAY_S)
        new_day = self.upload_day[devices] != day
        self.uploads_on_day[devices] = np.where(new_day, 1, self.uploads_on_day[devices] + 1)
        self.upload_day[devices] = day
        self.last_round[devices] = round_

    def state_dict(self) -> dict[str, np.ndarray]:
        """All columns, for checkpoints."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> DevicePopulation:
        """Inverse of :meth:`state_dict`."""
        return cls(**{f.name: np.array(state[f.name]) for f in fields(cls)})


def _is_night(now_s: float, config: DeviceConfig) -> bool:
    hour = (now_s % DAY_S) / 3600.0
    start, end = config.night_start_hour, config.night_end_hour
    return (start <= hour or hour < end) if start > end else (start <= hour < end)
