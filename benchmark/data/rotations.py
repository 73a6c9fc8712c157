"""3DIEBench latents -> relative actions and probe targets (SIE ``src/dataset.py``, C.3).

A latent file holds 7 floats: [rot_x, rot_y, rot_z, floor_hue, spot_theta, spot_phi, spot_hue].
R_k = Rotation.from_euler("xyz", latent_k[:3]) (extrinsic x -> y -> z, as Blender's XYZ Euler);
the relative rotation from view j to view k is R_j^-1 R_k, encoded as a scalar-last quaternion
(x, y, z, w) that is *not* sign-canonicalised unless asked.

Absolute per-view parameters (``Batch.latents``, for ContextSSL's auxiliary target) use the same layout as
the actions: the quaternion of R_k itself, then the raw non-rotation latents the actions take differences
of. For ``rotcolor`` this is exactly upstream ContextSSL's ``individual_params`` (``Sharut/In-Context-Symmetries
dataset.py`` ``Dataset3DIEBenchRotColor``: ``concat(R.from_euler("xyz", latent[:3]).as_quat(), latent[[3, 6]])``).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

COLOR_IDX = [3, 6]  # floor_hue, spot_hue: "colour" in SIE, seq-JEPA and ContextSSL
ALL_IDX = [3, 4, 5, 6]  # every non-rotation latent
ACTION_DIMS = {"rot": 4, "rotcolor": 6, "all": 8}


def rotations(latents: np.ndarray) -> Rotation:
    """(N, 7) latents -> N rotations."""
    return Rotation.from_euler("xyz", latents[:, :3])


def quat(r: Rotation, canonical: bool = False) -> np.ndarray:
    q = r.as_quat()  # scalar-last (x, y, z, w)
    if canonical:
        q = np.where(q[..., 3:4] < 0, -q, q)
    return q.astype(np.float32)


def relative_quats(latents: np.ndarray, canonical: bool = False) -> np.ndarray:
    """(V, 7) latents -> (V-1, 4) quaternions of R_j^-1 R_{j+1}."""
    r = rotations(latents)
    return quat(r[:-1].inv() * r[1:], canonical)


def relative_actions(latents: np.ndarray, latent_type: str, canonical: bool = False) -> np.ndarray:
    """(V, 7) latents -> (V-1, A) actions between consecutive views for ``latent_type``."""
    q = relative_quats(latents, canonical)
    if latent_type == "rot":
        return q
    idx = COLOR_IDX if latent_type == "rotcolor" else ALL_IDX
    deltas = (latents[1:, idx] - latents[:-1, idx]).astype(np.float32)
    return np.concatenate([q, deltas], axis=1)


def absolute_params(latents: np.ndarray, latent_type: str, canonical: bool = False) -> np.ndarray:
    """(V, 7) latents -> (V, A) absolute parameters of each view, in the layout of :func:`relative_actions`."""
    q = quat(rotations(latents), canonical)
    if latent_type == "rot":
        return q
    idx = COLOR_IDX if latent_type == "rotcolor" else ALL_IDX
    return np.concatenate([q, latents[:, idx].astype(np.float32)], axis=1)


def pair_targets(first: np.ndarray, second: np.ndarray, canonical: bool = False) -> dict[str, np.ndarray]:
    """Targets of the 3DIEBench equivariance probes from (N, 7) latents of N view pairs.

    rotation: quaternion of R_first^-1 R_second (pair probe); color: (floor_hue, spot_hue) deltas
    (pair probe); indiv_rotation: quaternion of R_first (single-view probe on the first view).
    """
    r1, r2 = rotations(first), rotations(second)
    return {
        "rotation": quat(r1.inv() * r2, canonical),
        "color": (second[:, COLOR_IDX] - first[:, COLOR_IDX]).astype(np.float32),
        "indiv_rotation": quat(r1, canonical),
    }


def probe_targets(latents: np.ndarray, canonical: bool = False) -> dict[str, np.ndarray]:
    """Targets of the 3DIEBench equivariance probes between views 0 and 1 (and of view 0 alone)."""
    return {k: v[0] for k, v in pair_targets(latents[:1], latents[1:2], canonical).items()}
