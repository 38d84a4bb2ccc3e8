"""Synthetic cohorts: the embedded default cohort and its DICOM rendering."""
