"""The file names of a folder ``lnm-jax export`` writes, defined once (a run folder's are in
:mod:`lnm_jax.run_files`): the exporter, the runtime that loads the folder and the output
checks that keep commands from writing into one all read them from here."""

PROGRAM = "model.jax_export"
WEIGHTS = "weights.npz"
ONNX = "model.onnx"
METADATA = "metadata.json"
MODEL_CARD = "model_card.md"
CHECKSUMS = "SHA256SUMS"
PREDICT_SCRIPT = "predict.py"  # the folder's command-line scorer (lnm_jax.serving.main)
REQUIREMENTS = "requirements.txt"
RUNTIME = "lnm_runtime"  # the export folder's copy of the portable modules (lnm_jax.export)
LICENSE = "LICENSE"  # lnm_jax's licence, handed on with that copy (provenance.license_text)
