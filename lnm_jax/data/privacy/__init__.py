"""Privacy: identifying DICOM attributes and the de-identified copy of a cohort."""
