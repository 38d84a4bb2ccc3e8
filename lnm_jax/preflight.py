"""Checks of a cohort against a config that run before anything trains or is written: the model
can run at the configured size, every patient has the inputs the model takes (or the model was
trained for missing inputs), and the cohort splits as configured with both classes in every
subset. ``lnm-jax validate`` reports the same checks without writing anything."""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from ml_collections import ConfigDict

from lnm_jax import names
from lnm_jax.config import ConfigError
from lnm_jax.data.cohorts.inputs import MissingInputsError, lacking, refuse_missing  # noqa: F401 (re-exported)
from lnm_jax.data.cohorts.manifest import Cohort
from lnm_jax.data.cohorts.splits import SplitError, make_splits
from lnm_jax.evaluation.summary import PREVALENCE_BOUNDS
from lnm_jax.models.fusion import check_config


def zero_fills(config: ConfigDict) -> bool:
    """Whether the user opted in to feeding a missing input as zeros (``data.zero_fill_missing``;
    configs stored before the field: no)."""
    return bool(config.data.get("zero_fill_missing", False))


def takes_missing_inputs(config: ConfigDict) -> bool:
    return bool(config.model.missing_inputs) or zero_fills(config)


def check_inputs_present(config: ConfigDict, cohort: Cohort, *, opt_in: str = "--config.data.zero_fill_missing=True"):
    """Raises :class:`MissingInputsError` listing the patients who lack an input the model takes,
    unless the model was trained for missing inputs (``model.missing_inputs``) or the user opted
    in to zero-filling (``opt_in`` names how). A model trained on complete inputs never saw a
    zero image: its prediction for such a patient is silently unreliable."""
    if not takes_missing_inputs(config):
        refuse_missing(cohort, names.parse_modalities(config.modalities), config.modalities, opt_in)


def check_lesion_masks(config: ConfigDict, cohort: Cohort, train_ids=None) -> str | None:
    """With the lesion head trained (``train.lesion_loss_weight`` > 0): ValueError when no
    training patient (``train_ids``; the whole cohort when None) has a lesion mask for an image
    input the model takes (the head's loss would be zero throughout); else a line counting
    them. None when the head is off."""
    if not config.train.get("lesion_loss_weight", 0.0):
        return None
    images = [m for m in names.parse_modalities(config.modalities) if m in names.IMAGE_INPUTS]
    patients = cohort.patients if train_ids is None else [cohort.by_id()[i] for i in train_ids]
    where = "in the cohort" if train_ids is None else "in the training split"
    counts = {m: sum(p.mask(m) is not None for p in patients) for m in images}
    if not any(counts.values()):
        everywhere = {m: sum(p.mask(m) is not None for p in cohort.patients) for m in images}
        elsewhere = f" ({sum(everywhere.values())} mask(s) in the cohort, none for training)" * any(everywhere.values())
        raise ValueError(
            f"train.lesion_loss_weight={config.train.lesion_loss_weight} trains a lesion head on the manifest's "
            f"masks, but no patient {where} has one{elsewhere} (columns {', '.join(names.mask(m) for m in images)}; "
            "docs/cohorts.md#cohort-manifest)"
        )
    return f"lesion head trained on masks ({where}): " + ", ".join(
        f"{m} {n} of {len(patients)}" for m, n in counts.items()
    )


def availability_patterns(cohort: Cohort) -> Counter:
    """'bmode+ceus+us_lnm' (the inputs present) -> patients."""
    return Counter("+".join(i for i in names.INPUTS if p.has(i)) for p in cohort.patients)


class Report(NamedTuple):
    """What :func:`report` found: ``lines`` to print, ``problems`` that refuse the cohort (one
    line each), and the first split's test patient IDs (``None`` unlabelled or unsplittable), for
    checks that must keep away from them (a pretrained backbone's)."""

    lines: list[str]
    problems: list[str]
    test: tuple | None = None


def report(
    cohort: Cohort,
    config: ConfigDict,
    *,
    labelled: bool = True,
    model: bool = True,
    trains: bool = False,
    new_patients: bool = False,
) -> Report:
    """``lnm-jax validate``'s :class:`Report`: availability patterns, checked against the
    inputs the model of ``config`` takes when ``model`` (a run or config was named), and the
    split check with ``config``'s split settings; with ``trains`` (a config to train, not a
    trained run's) also :func:`check_trainable` on its train split; ``new_patients`` (checked
    against a trained run: ``validate --workdir``) draws no split from them. Writes nothing."""
    uses = names.parse_modalities(config.modalities) if model else ()
    taken = "taken" if takes_missing_inputs(config) else "refused"
    lines = [f"model inputs: {'+'.join(uses)} (missing inputs {taken})" if model else "availability patterns:"]
    for pattern, n in sorted(availability_patterns(cohort).items(), key=lambda kv: -kv[1]):
        present = set(pattern.split("+"))
        ok = not model or takes_missing_inputs(config) or set(uses) <= present
        why = "" if ok else "  <- refused: lacks " + "+".join(i for i in uses if i not in present)
        lines.append(f"  {pattern or '(none)'}: {n} patient(s){why}")
    problems, test = [], None
    if model:
        try:
            check_config(config)
        except ConfigError as e:  # each problem as the model's, without the count's heading
            problems += [f"model: {x}" for x in e.problems]
        try:
            check_inputs_present(config, cohort)
        except MissingInputsError as e:
            problems.append(f"inputs: {e}")
    # a new site's patients checked against a trained run (model, not trains): no split is drawn
    # from them and no training advice given (helper-98: 6 new patients had failed validate on
    # "cannot make a stratified split" and been told to weigh positives in a finished run)
    if labelled and not new_patients:
        try:
            splits = make_splits(config, cohort, named=False)  # said under the manifest's name
            s = splits[0]
            test = tuple(s.test)
            lines.append(
                f"split ({config.data.split.to_dict()}, folds {config.protocol.folds}): "
                f"train {len(s.train)}, val {len(s.val)}, test {len(s.test)}, both classes in every subset"
            )
            if model:
                try:
                    if masks := check_lesion_masks(config, cohort, s.train):
                        lines.append(masks)
                except ValueError as e:
                    problems.append(f"masks: {e}")
            if model and trains:  # what train refuses in its split before writing anything (had been said OK)
                try:
                    check_trainable(config, len(s.train))
                except ValueError as e:
                    problems.append(f"split: {e}")
                try:
                    if memory := check_host_memory(config, len(cohort.patients)):
                        lines.append(memory)
                except ValueError as e:
                    problems.append(f"memory: {e}")
        except SplitError as e:
            problems.append(f"split: {e}")
        if warning := prevalence_warning(cohort, config):
            lines.append(warning)
    uses_flag = names.US_LNM in uses if model else None
    lines += [f"warning: {w}" for w in flag_warnings(cohort, uses_flag, labelled)]
    if not model:  # (a model named refuses a missing input itself: check_inputs_present)
        lines += [f"warning: {w}" for w in absent_image_warnings(cohort)]
    return Report(lines, problems, test)


def absent_image_warnings(cohort: Cohort) -> list[str]:
    """A line per image input no patient has, where no model is named: the default model and the
    paper's triple take it, and refuse the cohort at ``train`` (helper-124: an empty CEUS column
    was said OK by ``validate``, then refused by ``train``), with the modalities it holds."""
    held = [i for i in names.INPUTS if any(p.has(i) for p in cohort.patients)]
    return [
        f"no patient has a {names.SETTING_LABELS[i]} picture: a model that takes it (the default and the paper's "
        f"triple) refuses this cohort; train one of what it holds (--config.modalities={','.join(held)})"
        for i in names.IMAGE_INPUTS
        if i not in held and held
    ]


def flag_warnings(cohort: Cohort, used: bool | None, labelled: bool = True) -> list[str]:
    """What the US-LNM column holds that a model taking it cannot learn from or should not
    (helper-120: each had been said OK): no patient with a flag (where ``used`` is None, no
    model named: the default models take it); one value for every patient that has one (the
    flag's weight never moves from its start, and a later patient with the other value is
    scored by weights that never saw it); with ``labelled``, a flag equal to the label (or its
    opposite) for every labelled patient of both classes (the label column copied into the
    flag's? a model learns the flag alone), or for all but a few (:data:`FLAG_AUC_COPIED`).
    ``used`` False (a model without the flag): []."""
    if used is False:
        return []
    flags = [p.us_lnm for p in cohort.patients if p.us_lnm is not None]
    if not flags:
        return [
            f"no patient has a {names.US_LNM} flag: a model that takes it (the default and the paper's triple) "
            f"refuses this cohort; train one without it (--config.modalities=bmode,ceus)"
        ]
    out = []
    if len(set(flags)) == 1:
        out.append(
            f"{names.US_LNM} is {flags[0]} for every patient that has it ({len(flags)}): a model learns nothing from "
            "it (its weight stays at its start), and a patient with the other value is scored by weights that never "
            "saw one"
        )
    pairs = [(p.us_lnm, p.lnm) for p in cohort.patients if p.us_lnm is not None and p.lnm is not None]
    if labelled and len({y for _, y in pairs}) == 2 and len(set(flags)) == 2:
        if all(f == y for f, y in pairs) or all(f != y for f, y in pairs):
            same = "equals" if pairs[0][0] == pairs[0][1] else "is the opposite of"
            out.append(
                f"{names.US_LNM} {same} the label for every labelled patient ({len(pairs)}): the label column copied "
                "into the flag's? a model taking it learns the flag alone (AUC 1)"
            )
        elif (said := _flag_near_label(pairs)) is not None:
            out.append(said)
    return out


# a binary flag's AUC (its balanced accuracy, (sensitivity + specificity) / 2) at or beyond which
# it is warned of as a copy of the label with an error or two (helper-120: equal for all but one
# of 60 patients, unsaid): a sonographer's US-LNM scored 0.643 in the paper's test set (Guang et
# al. 2023), the triple model 0.831; a flag far above both reads the pathology, not the scan
FLAG_AUC_COPIED = 0.95


def _flag_near_label(pairs: list[tuple[int, int]]) -> str | None:
    """The warning of a flag that separates the labels of ``pairs`` (flag, label) as well as
    :data:`FLAG_AUC_COPIED` or better (or its opposite as badly), else None."""
    pos = [f for f, y in pairs if y == 1]
    neg = [f for f, y in pairs if y == 0]
    sens, spec = sum(pos) / len(pos), 1 - sum(neg) / len(neg)
    auc = (sens + spec) / 2
    if FLAG_AUC_COPIED > auc > 1 - FLAG_AUC_COPIED:
        return None
    agree = sum(f == y for f, y in pairs)
    agree, how = (agree, "agrees with") if auc >= FLAG_AUC_COPIED else (len(pairs) - agree, "is the opposite of")
    return (
        f"{names.US_LNM} {how} the label for {agree} of {len(pairs)} labelled patients (as a score, AUC "
        f"{max(auc, 1 - auc):.3f}, where the paper's sonographers' flag scored 0.643): the label column copied into "
        f"the flag's, with an error or two? a model taking it learns the flag alone"
    )


def prevalence_warning(cohort: Cohort, config: ConfigDict) -> str | None:
    """A line when the cohort's prevalence is outside 0.2-0.8 and positives are not weighted:
    a plain-BCE model's 0.5 threshold then calls (nearly) every patient one class."""
    labels = [x for x in cohort.labels if x is not None]
    if not labels:
        return None
    prevalence, (lo, hi) = sum(labels) / len(labels), PREVALENCE_BOUNDS
    if lo <= prevalence <= hi or config.train.get("pos_weight", 1.0) != 1.0:
        return None
    return (
        f"warning: prevalence {prevalence:.3f} is outside {lo}-{hi}: consider --config.train.pos_weight=balanced, "
        "and judge the model at the threshold evaluate chooses on validation, not at 0.5"
    )


def check_pretraining(config: ConfigDict, cohort: Cohort, test_ids) -> list[str]:
    """What a run started from ``model.init_from``'s pretrained backbone is told, checked
    before it writes anything. ValueError when a test patient's image (``test_ids`` of
    ``cohort``) was among the images the backbone was pretrained on (``backbone.json``'s
    :data:`~lnm_jax.names.PRETRAINED_PICTURES`, by decoded content): their test scores would
    come from a backbone that has seen them (helper-57: a run on another split seed than its
    pretraining's had 5 of its 7 test patients among them, unsaid). Notes (returned): a backbone
    pretrained with ``--include-test`` (the user's choice) whose images hold test patients', one
    whose record predates the field (nothing to check), one pretrained at another image size
    than the run's (its filters meet structures at another scale). None of it for no
    ``init_from`` or a backbone of another source (converted weights)."""
    if not config.model.get("init_from"):
        return []
    from lnm_jax.weights.io import backbone_meta, branch_backbone_dirs  # noqa: PLC0415

    init, size = config.model.init_from, int(config.data.image_size)
    images = [m for m in names.parse_modalities(config.modalities) if m in names.IMAGE_INPUTS]
    folders = branch_backbone_dirs(init, tuple(images))
    read = {f: backbone_meta(f) for f in dict.fromkeys(folders.values())}  # each folder's record once
    metas = list(read.values())
    pretrained = [m for m in metas if str(m.get("source", "")).startswith("lnm-jax pretrain")]
    notes = [
        f"note: {init} was pretrained at {m['image_size']} px, this run trains at {size} px: its filters meet "
        "structures at another scale than they learned"
        for m in pretrained[:1]
        if m.get("image_size") not in (None, size)
    ]
    # a branch started from a backbone pretrained on other images than its own (a shared
    # backbone of a CEUS-only pretraining for the B-mode branch: helper-97)
    for branch, folder in folders.items():
        meta = read[folder]
        seen_inputs = meta.get("inputs") if str(meta.get("source", "")).startswith("lnm-jax pretrain") else None
        if seen_inputs and branch not in seen_inputs:
            notes.append(
                f"note: the {branch} branch starts from {folder}, pretrained on {', '.join(seen_inputs)} images only: "
                f"none of its pretraining was on {branch}"
            )
    if pretrained and any(names.PRETRAINED_PICTURES not in m for m in pretrained):
        return [
            *notes,
            f"note: {init} records no pretraining images (pretrained before they were): its pretraining is not "
            "checked against the test split",
        ]
    seen = set().union(*(m[names.PRETRAINED_PICTURES] for m in pretrained))
    by = cohort.by_id()
    hits = [pid for pid in test_ids if any(keys and keys[0][0] in seen for keys in by[pid].pictures.values())]
    if not hits:
        return notes
    said = (
        f"{len(hits)} of the {len(test_ids)} test patients' images ({', '.join(hits[:3])}{', ...' * (len(hits) > 3)}) "
        f"are among those {init} was pretrained on"
    )
    if not all(m.get("test_split_kept_out", True) for m in pretrained):
        return [
            *notes,
            f"note: {said} (pretrained with --include-test: their test scores come from a backbone that saw them)",
        ]
    raise ValueError(
        f"model.init_from: {said}: their test scores would come from a backbone that saw them. Pretrain with this "
        f"run's split (data.split.seed={config.data.split.seed}, test_fraction {config.data.split.test_fraction}, "
        "the same manifest first), or start from a backbone that never saw this cohort's test split"
    )


def check_host_memory(config: ConfigDict, patients: int, available: int | None = None) -> str | None:
    """The memory the decoded cohort will hold (``data.cache``: every patient's images, resized,
    float32; :func:`lnm_jax.data.loaders.loader.held_bytes`) against what the machine has
    available (``available``, bytes; default ``MemAvailable``): ValueError, before a run writes
    anything, where even the least it can take (every image grey) is more, naming both and the
    settings that lower it (helper-94: a cohort too large was decoded for minutes, then killed
    by a MemoryError, or silently by the kernel); a warning line (returned) where only the most
    (every image in colour) is; None otherwise or where the available memory is unknown."""
    from lnm_jax.data.loaders.loader import held_bytes  # noqa: PLC0415
    from lnm_jax.host_memory import available_bytes  # noqa: PLC0415

    if available is None:
        available = available_bytes()
    if not config.data.get("cache", True) or available is None:
        return None
    inputs = names.parse_modalities(config.modalities)
    low, high = held_bytes(patients, int(config.data.image_size), int(config.data.clip_frames), inputs)
    said = (
        f"the decoded cohort held in memory (data.cache=True: {patients} patients' images at "
        f"{config.data.image_size} px, float32) takes {low / 2**30:.1f}-{high / 2**30:.1f} GiB (grey to colour); "
        f"{available / 2**30:.1f} GiB of memory are available"
    )
    remedy = "--config.data.cache=False decodes each image when it is read instead, or lower data.image_size"
    if low > available:
        raise ValueError(f"{said}: {remedy}")
    return f"warning: {said}, fewer than colour images would take: {remedy}" if high > available else None


def check_disk_space(folder, state_bytes: int, free: int | None = None, states: int = 3) -> None:
    """ValueError, before a run writes anything, where the disk holding ``folder`` (or its
    nearest existing parent) has less free space (``free``, bytes; default what the system
    says) than ``states`` train states of ``state_bytes`` take: a first start's 'best' and
    'latest' checkpoints and one being written beside them before it replaces its predecessor
    (3; a resume, whose checkpoints are on the disk already, needs the one in flight; a
    mid-epoch checkpoint one more) (helper-94: nothing said the need before a full disk stopped
    a run after its first epoch)."""
    import shutil  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    where = Path(folder).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free if free is None else free
    need = states * state_bytes
    if free < need:
        raise ValueError(
            f"{where} has {free / 2**20:.0f} MiB free; the run's checkpoints need about {need / 2**20:.0f} MiB "
            f"({states} of its state, {state_bytes / 2**20:.0f} MiB of parameters, BatchNorm statistics and optimizer "
            "moments: the checkpoints it keeps and one being written): free space there or use another --workdir"
        )


def check_trainable(config: ConfigDict, train_patients: int) -> None:
    """What training would trip on in its split, checked before a run writes anything: a train
    split of fewer patients than one batch (ValueError naming both), and batches that the
    devices training shards them over (``train.data_parallel``, more than one device) do not
    divide (:class:`ConfigError` naming each field: the mesh's own check had come after the run's
    records and the initialisation's compile, exit 1, helper-88). A pretrained backbone
    (``model.init_from``) is checked where it is read: :func:`lnm_jax.run.read_pretrained`."""
    from lnm_jax.training.sharding import indivisible_batches  # noqa: PLC0415

    if config.train.get("data_parallel", True) and (
        problems := indivisible_batches(
            {f"train.{k}": config.train[k] for k in ("batch_size", "eval_batch_size")},
            ", or --config.train.data_parallel=false (one device)",
        )
    ):
        raise ConfigError(problems)
    if train_patients < config.train.batch_size:  # (helper-112: the field had not been named; exit 1)
        raise ConfigError(
            [
                f"train.batch_size: {config.train.batch_size} is more than the train split's {train_patients} "
                f"patients (one batch a step): at most {train_patients}, --config.train.batch_size=N"
            ]
        )
