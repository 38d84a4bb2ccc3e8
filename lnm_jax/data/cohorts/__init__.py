"""Cohorts: manifests, patient-level splits, the survey behind `validate`, public-data converters."""
