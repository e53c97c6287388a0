"""The procedural synthetic Re-ID data set, written in the Market-1501 layout (``dcsnas data synth``).

``generate(preset, seed, out)`` plans identities, cameras and file names, then renders every image with
:mod:`dcsnas.data.synthetic_render` into::

    out/bounding_box_train/  out/query/  out/bounding_box_test/  out/synth_meta.json

with Market-1501 names ``PPPP_cCsS_FFFFFF_BB.jpg`` (pid, 1-based camera, sequence, frame, box). Junk
(pid ``-1``) and distractors (pid ``0000``) are in ``bounding_box_test`` only. Identities are perturbations
of a few prototypes (1–2 attribute groups re-drawn), so they share most attributes. Each image has its own
random generator seeded by ``(seed, kind, pid, camera, index)``: the output is byte-identical for a given
preset and seed, whatever the order of rendering or the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import dcsnas.data.synthetic_render as render
from dcsnas.errors import DataError
from dcsnas.utils.io import atomic_write_json
from dcsnas.utils.progress import progress

GENERATOR_VERSION = 1
META_NAME = "synth_meta.json"
TRAIN_DIR, QUERY_DIR, GALLERY_DIR = "bounding_box_train", "query", "bounding_box_test"

# Seed-sequence tags: each random stream is keyed by (seed, tag, ...), so streams never overlap.
_IDENTITIES, _PLAN, _CAMERAS, _DISTRACTOR_IDS, _TRACK, _IMAGE, _DISTRACTOR, _JUNK = range(8)


@dataclass(frozen=True)
class SynthPreset:
    """Sizes of a synthetic data set. ``query_images`` is the number of (test identity, camera) pairs;
    ``gallery_images`` counts test-identity images in ``bounding_box_test`` (distractors and junk apart)."""

    name: str
    train_ids: int
    test_ids: int
    cameras: int
    train_images: int
    query_images: int
    gallery_images: int
    distractors: int
    junk: int
    ids_per_prototype: int = 8

    def check(self) -> None:
        """Raise :class:`DataError` when the sizes cannot be met."""
        problems = []
        if not 2 <= self.cameras <= 9:
            problems.append(f"cameras={self.cameras} (allowed: 2 to 9, one digit in file names)")
        if self.train_ids < 1 or self.test_ids < 1 or self.train_ids + self.test_ids > 9999:
            problems.append(
                f"train_ids={self.train_ids}, test_ids={self.test_ids} (allowed: at least 1 each, 9999 in all)"
            )
        if self.train_images < 2 * self.train_ids:
            problems.append(f"train_images={self.train_images} (allowed: at least 2 per training identity)")
        if not 2 * self.test_ids <= self.query_images <= self.cameras * self.test_ids:
            problems.append(
                f"query_images={self.query_images} (allowed: 2 to {self.cameras} cameras per test identity)"
            )
        if self.gallery_images < self.query_images:
            problems.append(
                f"gallery_images={self.gallery_images} (allowed: at least query_images={self.query_images})"
            )
        if self.distractors < 0 or self.junk < 0 or self.ids_per_prototype < 1:
            problems.append("distractors, junk must be >= 0 and ids_per_prototype >= 1")
        if problems:
            raise DataError(f"synthetic preset '{self.name}' is invalid: " + "; ".join(problems))


PRESETS: dict[str, SynthPreset] = {
    "tiny": SynthPreset(
        "tiny",
        train_ids=12,
        test_ids=12,
        cameras=4,
        train_images=72,
        query_images=30,
        gallery_images=60,
        distractors=6,
        junk=6,
    ),
    "small": SynthPreset(
        "small",
        train_ids=200,
        test_ids=200,
        cameras=6,
        train_images=2400,
        query_images=600,
        gallery_images=1600,
        distractors=200,
        junk=200,
    ),
    # Market-1501: 751/12936 train, 750 ids with 3368 queries, bounding_box_test = 13120 + 2793 + 3819 = 19732.
    "market": SynthPreset(
        "market",
        train_ids=751,
        test_ids=750,
        cameras=6,
        train_images=12936,
        query_images=3368,
        gallery_images=13120,
        distractors=2793,
        junk=3819,
    ),
}


@dataclass(frozen=True)
class _Job:
    """One image to render: where it goes and the random streams it draws from."""

    path: str  # relative to the output folder
    kind: str  # "person", "distractor" or "junk"
    camera: int  # 0-based
    key: tuple[int, ...]  # seed sequence of the image's generator
    track_key: tuple[int, ...] = ()  # seed sequence of the (identity, camera) track; persons only
    identity: render.Identity | None = None


@dataclass
class _Plan:
    cameras: list[render.CameraStyle]
    jobs: list[_Job]
    meta_ids: dict[str, dict]


def _resolve(preset: str | SynthPreset) -> SynthPreset:
    if isinstance(preset, SynthPreset):
        preset.check()
        return preset
    if preset not in PRESETS:
        raise DataError(f"unknown synthetic preset '{preset}'; allowed: {', '.join(PRESETS)}")
    return PRESETS[preset]


def _sample_identities(n: int, per_prototype: int, rng: np.random.Generator) -> tuple[list[render.Identity], list[int]]:
    """``n`` distinct identities, each 1–2 attribute groups away from one of ``ceil(n / per_prototype)``
    random prototypes; returns them and their prototype indices."""
    prototypes = [render.random_identity(rng) for _ in range(-(-n // per_prototype))]
    seen: set[tuple[str, ...]] = set()
    identities, origin = [], []
    while len(identities) < n:
        p = int(rng.integers(len(prototypes)))
        candidate = render.perturb(prototypes[p], rng, groups=int(rng.integers(1, 3)))
        if candidate.key() not in seen:
            seen.add(candidate.key())
            identities.append(candidate)
            origin.append(p)
    return identities, origin


def _cameras_per_identity(n: int, total: int, cameras: int, rng: np.random.Generator) -> np.ndarray:
    """Camera counts in [2, ``cameras``] for ``n`` identities summing to ``total``."""
    counts = rng.integers(2, cameras + 1, size=n)
    while counts.sum() != total:
        step = 1 if counts.sum() < total else -1
        movable = np.flatnonzero(counts < cameras if step > 0 else counts > 2)
        counts[movable[int(rng.integers(len(movable)))]] += step
    return counts


def _spread(total: int, slots: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``total`` into ``slots`` counts of at least 1 with uneven (gamma-weighted) shares."""
    weights = rng.gamma(1.5, size=slots)
    return 1 + rng.multinomial(total - slots, weights / weights.sum())


class _Names:
    """Market-1501 file names, unique within the data set."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, pid: int, camera: int, seq: int, frame: int, box: int = 1) -> str:
        while True:
            name = f"{'-1' if pid < 0 else f'{pid:04d}'}_c{camera + 1}s{seq}_{frame:06d}_{box:02d}.jpg"
            if name not in self.used:
                self.used.add(name)
                return name
            frame = (frame + 1) % 1_000_000


def _plan(preset: SynthPreset, seed: int) -> _Plan:
    """Identities, cameras, per-identity camera sets and image counts, file names: everything but pixels."""
    rng = np.random.default_rng([seed, _PLAN])
    backgrounds = rng.permutation(len(render.BACKGROUNDS))
    templates = rng.permutation(len(render.VIEW_TEMPLATES))
    cameras = [
        render.sample_camera(
            c,
            render.BACKGROUNDS[backgrounds[c % len(backgrounds)]],
            render.VIEW_TEMPLATES[templates[c % len(templates)]],
            np.random.default_rng([seed, _CAMERAS, c]),
        )
        for c in range(preset.cameras)
    ]
    traffic = rng.uniform(0.6, 1.4, size=preset.cameras)
    traffic /= traffic.sum()

    n_ids = preset.train_ids + preset.test_ids
    identities, origin = _sample_identities(n_ids, preset.ids_per_prototype, np.random.default_rng([seed, _IDENTITIES]))
    pids = rng.permutation(np.arange(1, n_ids + 1))
    train_pids = sorted(int(p) for p in pids[: preset.train_ids])
    test_pids = sorted(int(p) for p in pids[preset.train_ids :])
    who = {int(p): (identities[i], origin[i]) for i, p in enumerate(pids)}

    names, jobs, meta_ids = _Names(), [], {}

    def track(pid: int, cams: np.ndarray, counts: np.ndarray, folders) -> None:
        """Jobs for ``pid``'s images on each camera; ``folders(cam, n)`` lists the folder of every image of a
        camera with ``n`` counted images (frames of one walk past the camera, 5–59 frames apart)."""
        identity, proto = who[pid]
        for cam, n in zip(cams, counts):
            cam, places = int(cam), folders(int(cam), int(n))
            seq = int(rng.integers(1, 7))
            frame = int(rng.integers(0, 1_000_000 - 60 * len(places)))
            for k, folder in enumerate(places):
                frame += int(rng.integers(5, 60))
                jobs.append(
                    _Job(
                        f"{folder}/{names.take(pid, cam, seq, frame)}",
                        "person",
                        cam,
                        (seed, _IMAGE, pid, cam, k),
                        (seed, _TRACK, pid, cam),
                        identity,
                    )
                )
        meta_ids[f"{pid:04d}"]["attributes"] = dataclasses.asdict(identity)
        meta_ids[f"{pid:04d}"]["prototype"] = proto

    def pick_cameras(k: int) -> np.ndarray:
        return np.sort(rng.choice(preset.cameras, size=k, replace=False, p=traffic))

    wanted = int(rng.integers(2, preset.cameras + 1, size=preset.train_ids).sum())
    train_cams = _cameras_per_identity(preset.train_ids, min(preset.train_images, wanted), preset.cameras, rng)
    slots = [pick_cameras(int(k)) for k in train_cams]
    counts = _spread(preset.train_images, int(train_cams.sum()), rng)
    offsets = np.concatenate([[0], np.cumsum(train_cams)])
    for i, pid in enumerate(train_pids):
        per_cam = counts[offsets[i] : offsets[i + 1]]
        meta_ids[f"{pid:04d}"] = {
            "split": "train",
            "cameras": [int(c) + 1 for c in slots[i]],
            "images": int(per_cam.sum()),
        }
        track(pid, slots[i], per_cam, lambda cam, n: [TRAIN_DIR] * n)

    test_cams = _cameras_per_identity(preset.test_ids, preset.query_images, preset.cameras, rng)
    slots = [pick_cameras(int(k)) for k in test_cams]
    counts = _spread(preset.gallery_images, preset.query_images, rng)
    offsets = np.concatenate([[0], np.cumsum(test_cams)])
    for i, pid in enumerate(test_pids):
        per_cam = counts[offsets[i] : offsets[i + 1]]
        meta_ids[f"{pid:04d}"] = {
            "split": "test",
            "cameras": [int(c) + 1 for c in slots[i]],
            "query": len(per_cam),
            "gallery": int(per_cam.sum()),
        }

        def folders(cam: int, n: int) -> list[str]:
            query_at = int(rng.integers(n + 1))
            return [QUERY_DIR if k == query_at else GALLERY_DIR for k in range(n + 1)]

        track(pid, slots[i], per_cam, folders)

    known = {identity.key() for identity in identities}
    id_rng = np.random.default_rng([seed, _DISTRACTOR_IDS])
    for k in range(preset.distractors):
        while (identity := render.random_identity(id_rng)).key() in known:
            pass
        cam = int(rng.integers(preset.cameras))
        name = names.take(0, cam, int(rng.integers(1, 7)), int(rng.integers(1_000_000)), int(rng.integers(1, 4)))
        jobs.append(_Job(f"{GALLERY_DIR}/{name}", "distractor", cam, (seed, _DISTRACTOR, k), identity=identity))
    for k in range(preset.junk):
        cam = int(rng.integers(preset.cameras))
        name = names.take(-1, cam, int(rng.integers(1, 7)), int(rng.integers(1_000_000)), int(rng.integers(1, 4)))
        jobs.append(_Job(f"{GALLERY_DIR}/{name}", "junk", cam, (seed, _JUNK, k)))
    return _Plan(cameras, jobs, dict(sorted(meta_ids.items())))


def _render(job: _Job, cameras: list[render.CameraStyle]) -> bytes:
    """The JPEG bytes of one job."""
    camera = cameras[job.camera]
    rng = np.random.default_rng(job.key)
    if job.kind == "junk":
        return render.render_junk(camera, rng)
    if job.kind == "distractor":
        return render.render_person(job.identity, camera, render.sample_track(camera, rng), rng, turn=0.0)
    return render.render_person(
        job.identity, camera, render.sample_track(camera, np.random.default_rng(job.track_key)), rng
    )


_worker_state: dict = {}


def _init_worker(cameras: list[render.CameraStyle], out: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's: no traceback per worker
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_state.update(cameras=cameras, out=Path(out))


def _write(job: _Job) -> None:
    (_worker_state["out"] / job.path).write_bytes(_render(job, _worker_state["cameras"]))


def _prepare(out: Path) -> None:
    """Make ``out`` an empty folder; a previous synthetic output (it has ``synth_meta.json``) is replaced."""
    if out.exists() and not out.is_dir():
        raise DataError(f"synthetic data output '{out}' exists and is not a folder; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / META_NAME).is_file():
            raise DataError(
                f"synthetic data output '{out}' is not empty and holds no {META_NAME}, so it is not a previous synthetic "
                "data set; give a new or empty folder (or a previous synthetic output, which is replaced)"
            )
        for sub in (TRAIN_DIR, QUERY_DIR, GALLERY_DIR):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / META_NAME).unlink()
    for sub in (TRAIN_DIR, QUERY_DIR, GALLERY_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _statistics(jobs: list[_Job], cameras: int) -> dict:
    """Images, identities and cameras per split, plus distractor and junk counts of the gallery."""
    stats: dict = {}
    for split, folder in (("train", TRAIN_DIR), ("query", QUERY_DIR), ("gallery", GALLERY_DIR)):
        records = [j for j in jobs if j.path.startswith(folder + "/")]
        stats[split] = {
            "images": len(records),
            "identities": len({j.path.split("/")[1].split("_")[0] for j in records if j.kind == "person"}),
            "cameras": len({j.camera for j in records}),
        }
    stats["gallery"]["distractors"] = sum(j.kind == "distractor" for j in jobs)
    stats["gallery"]["junk"] = sum(j.kind == "junk" for j in jobs)
    stats["images"] = len(jobs)
    stats["cameras"] = cameras
    return stats


def generate(
    preset: str | SynthPreset, seed: int, out: str | Path, show_progress: bool = True, workers: int = 1
) -> dict:
    """Write the synthetic data set ``preset`` with ``seed`` into ``out``; return its statistics.

    The statistics give images/identities/cameras per split, the gallery's distractors and junk, the total
    ``images``, and ``seconds`` and ``images_per_s`` of the run. ``workers`` > 1 renders in that many
    processes; the files are the same for any ``workers``.
    """
    spec = _resolve(preset)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"synthetic data seed must be a non-negative integer, got {seed!r}")
    if workers < 1:
        raise DataError(f"synthetic data workers must be >= 1, got {workers}")
    seed = int(seed)
    start = time.perf_counter()
    out = Path(out)
    plan = _plan(spec, seed)
    _prepare(out)
    counts = _statistics(plan.jobs, spec.cameras)
    meta = {
        "generator": "dcsnas.data.synthetic",
        "version": GENERATOR_VERSION,
        "complete": False,
        "preset": dataclasses.asdict(spec),
        "seed": seed,
        "image_hw": list(render.IMAGE_HW),
        "counts": counts,
        "cameras": [dataclasses.asdict(c) for c in plan.cameras],
        "identities": plan.meta_ids,
    }
    atomic_write_json(out / META_NAME, meta)
    bar = {"desc": f"synth {spec.name}", "total": len(plan.jobs), "enabled": show_progress, "unit": "img"}
    if workers == 1:
        for job in progress(plan.jobs, **bar):
            (out / job.path).write_bytes(_render(job, plan.cameras))
    else:
        with multiprocessing.get_context().Pool(
            workers, initializer=_init_worker, initargs=(plan.cameras, str(out))
        ) as pool:
            for _ in progress(pool.imap_unordered(_write, plan.jobs, chunksize=32), **bar):
                pass
    meta["complete"] = True
    atomic_write_json(out / META_NAME, meta)
    seconds = time.perf_counter() - start
    return {
        "preset": spec.name,
        "seed": seed,
        "out": str(out),
        **counts,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(plan.jobs) / seconds, 1),
    }
