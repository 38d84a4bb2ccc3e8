"""What a model predicts, in words: the ``task`` config section.

The network is the same whatever the cohort; what its output means is not. The paper's model
gives P(cervical lymph node metastasis) of papillary thyroid carcinoma, a BUS-BRA model
P(malignant breast lesion), a DDTI model whatever label its manifest carries. Every place that
names the label, its classes, the flag or the intended use (plots, ``validate``, reports,
Grad-CAM figures, the model card and an export's metadata) reads it from here, so that a
model is never described as another.

``config.task`` fields (strings): ``name`` (the condition predicted), ``label`` (short, for
"P(label)"), ``positive`` / ``negative`` (the classes of label 1 / 0), ``label_source`` (how
the label was established), ``flag`` / ``flag_meaning`` (the binary clinical input, manifest
column ``us_lnm``), ``inputs`` (what each image input holds, by input name),
``intended_use``, ``out_of_scope``, ``licence`` (of the trained weights), ``references``.
A run stored before the section existed is the paper's task.
"""

from __future__ import annotations

import dataclasses

PAPER_REFERENCE = (
    "Guang Y, et al. A model for predicting lymph node metastasis of thyroid carcinoma: a multimodality "
    "convolutional neural network study. Quant Imaging Med Surg 2023;13(12):8370-8382"
)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    label: str
    positive: str
    negative: str
    label_source: str
    flag: str
    flag_meaning: str
    inputs: dict[str, str]
    intended_use: str
    out_of_scope: str
    licence: str
    references: tuple[str, ...] = (PAPER_REFERENCE,)

    @property
    def prob(self) -> str:
        """'P(LNM)': the model's output in words."""
        return f"P({self.label})"

    def class_name(self, label) -> str:
        """The class of a 0/1 label ('unknown' for None)."""
        return {1: self.positive, 0: self.negative}.get(None if label is None else int(label), "unknown")

    @classmethod
    def from_config(cls, config) -> Task:
        """The config's ``task`` section (the paper's task where it has none); fields it omits
        keep the paper's values."""
        section = config.get("task") if hasattr(config, "get") else None
        if not section:
            return PAPER
        values = {k: section[k] for k in section if k in {f.name for f in dataclasses.fields(cls)}}
        if "inputs" in values:
            values["inputs"] = dict(values["inputs"])
        if "references" in values:
            values["references"] = tuple(values["references"])
        return dataclasses.replace(PAPER, **values)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "references": list(self.references)}


PAPER = Task(
    name="cervical lymph node metastasis (LNM) of papillary thyroid carcinoma",
    label="LNM",
    positive="LNM",
    negative="no LNM",
    label_source="pathology after neck dissection",
    flag="US-LNM",
    flag_meaning="the sonographer judged the cervical lymph nodes abnormal on ultrasound (1) or not (0)",
    inputs={
        "bmode": "B-mode ultrasound of the thyroid nodule",
        "ceus": "contrast-enhanced ultrasound (CEUS) of the nodule: a still or a clip",
    },
    intended_use=(
        "Research only: estimating P(cervical lymph node metastasis) of papillary thyroid carcinoma from B-mode and "
        "CEUS ultrasound and the sonographer's US-LNM call, to study the method."
    ),
    out_of_scope=(
        "Clinical decisions about a patient; cohorts, scanners or centres it was not validated on; other tumours "
        "or organs; screening. Not a medical device."
    ),
    licence="Apache-2.0 (code); the weights carry the terms of the data they were trained on",
)
