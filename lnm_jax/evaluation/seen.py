"""Which of a manifest's patients a run has seen: its training or validation patients, by id or
by their pictures under other ids (predict, gradcam --manifest: their probabilities and maps are
not those of unseen patients)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lnm_jax.data.cohorts.manifest import Cohort, pictures_among

if TYPE_CHECKING:
    from lnm_jax.run import Run


def seen_patients_line(run: Run, cohort: Cohort) -> str | None:
    """:func:`seen_patients`' line: None when no patient of ``cohort`` is one ``run`` has seen."""
    return seen_patients(run, cohort)[1]


def seen_patients(run: Run, cohort: Cohort) -> tuple[dict[str, str], str | None]:
    """(each seen patient of ``cohort``: their id -> ``"train"`` or ``"val"``, the subset of
    ``run`` whose patient they are; the line saying so, or None). A line when any of ``cohort``'s
    patients are ``run``'s training or validation patients:
    by id (a manifest that holds the training cohort), or by a picture under another id (an
    image of theirs, a frame of their clip or their cine in the new patient's row: the same
    recording, :func:`lnm_jax.data.cohorts.manifest.recording`; or nearly one of their stills,
    :mod:`lnm_jax.data.cohorts.similar`: a cohort exported again under new ids, as JPEG, an
    "external" set that overlaps the training one). Their probabilities are not those of
    unseen patients. A patient with a training or validation patient's id but none of their
    pictures (another cohort numbered alike) is said apart, not counted. None when none are."""
    subsets = ("train", "val")
    ids = {s: set(run.split.subset(s)) for s in subsets}
    known = run.cohort.by_id()

    def pictures(patients):  # each image input's picture keys and still thumbnail, with its patient's id
        return [(p.patient_id, (keys, p.thumbnail(m))) for p in patients for m, keys in p.pictures.items()]

    new = pictures(cohort.patients)
    shown: dict[str, dict[str, str]] = {}  # each subset's new patients with a picture of one of its patients: whose
    for s in subsets:
        theirs = pictures(known[pid] for pid in sorted(ids[s]))
        hits = pictures_among([x for _, x in new], [x for _, x in theirs])
        shown[s] = {}
        for (pid, _), hit in zip(new, hits):
            if hit is not None:
                shown[s].setdefault(pid, theirs[hit][0])

    def by_picture(p) -> str | None:
        return next((s for s in subsets if p.patient_id in shown[s]), None)

    seen, pictured, renumbered = {s: 0 for s in subsets}, 0, []
    whose: dict[str, str] = {}
    named: list[str] = []  # the first few seen, as said
    for p in cohort.patients:
        s = next((s for s in subsets if p.patient_id in ids[s]), None)
        if s is not None and p.pictures and known[p.patient_id].pictures and by_picture(p) is None:
            renumbered.append(p.patient_id)  # their id, none of their pictures: another cohort numbered alike
            continue
        if s is None and (s := by_picture(p)) is not None:
            pictured += 1
            named.append(f"'{p.patient_id}' (a picture of {SUBSET_NAMES[s]} patient '{shown[s][p.patient_id]}')")
        elif s is not None:
            named.append(f"'{p.patient_id}'")
        if s is not None:
            seen[s] += 1
            whose[p.patient_id] = s
    said = []
    if any(seen.values()):
        how = f" ({pictured} of them by their pictures, under other ids)" if pictured else ""
        (n, kind), *more = [(seen[s], SUBSET_NAMES[s]) for s in subsets if seen[s]]  # (a zero count unsaid)
        said.append(
            f"{n} of these {len(cohort)} patients {'is' if n == 1 else 'are'} this run's {kind} patients"
            + "".join(f" and {m} its {k} patients" for m, k in more)
            + f"{how}: their probabilities are optimistic "
            "(the model was fitted to them, or chosen and calibrated on them); only its test patients and new ones "
            f"are unseen ({_some(named)})"
        )
    if renumbered:
        quoted = [f"'{pid}'" for pid in renumbered]
        said.append(
            f"{len(renumbered)} of these {len(cohort)} patients {'has' if len(renumbered) == 1 else 'have'} the id "
            "of one of this run's training or validation patients but none of their pictures (another cohort numbered "
            f"alike?): not counted as seen ({_some(quoted)})"
        )
    return whose, "; ".join(said) or None


SUBSET_NAMES = {"train": "training", "val": "validation"}


def _some(items: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``items`` and how many more: "'a', 'b', 'c' and 4 more"."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
