"""Identifying information in DICOM headers (PS3.15 Annex E, Basic Application Level
Confidentiality Profile): what ``validate`` reports and what ``deidentify`` removes.

The profile's table lists ~600 attributes; an ultrasound header carries a few dozen of them.
Rather than trusting a list alone, the header pass here is generic where the standard's
categories are: every person name (VR PN), every date, time and date-time (DA, TM, DT),
every private element and every instance UID is handled whatever its keyword, in nested
sequences too; the keywords below add the identifying attributes that are none of those
(IDs, addresses, institution, device, free-text comments).
"""

from __future__ import annotations

from collections.abc import Callable

# Attributes of the basic profile that are not caught by their VR (PN/DA/TM/DT/UI): removed
# (X) or, where the IOD requires them present (type 2), emptied (Z).
IDENTIFYING = (
    "AccessionNumber",
    "AdditionalPatientHistory",
    "AdmissionID",
    "AdmittingDiagnosesDescription",
    "BranchOfService",
    "CurrentPatientLocation",
    "DerivationDescription",
    "DeviceSerialNumber",
    "EthnicGroup",
    "ImageComments",
    "InstitutionAddress",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
    "MilitaryRank",
    "Occupation",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "PatientAddress",
    "PatientAge",
    "PatientComments",
    "PatientID",
    "PatientInsurancePlanCodeSequence",
    "PatientReligiousPreference",
    "PatientSize",
    "PatientState",
    "PatientTelephoneNumbers",
    "PatientWeight",
    "PerformedLocation",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "ProtocolName",
    "ReferencedPatientSequence",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "RequestAttributesSequence",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "ScheduledProcedureStepDescription",
    "SeriesDescription",
    "StationName",
    "StudyComments",
    "StudyDescription",
    "StudyID",
    "PatientSex",
)
# Type 2 in the ultrasound and general IODs: kept present, emptied.
KEPT_EMPTY = {"PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber"}
# UIDs that identify a thing in the world (replaced consistently), unlike class/syntax UIDs.
INSTANCE_UIDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "ReferencedSOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "IrradiationEventUID",
    "SynchronizationFrameOfReferenceUID",
    "ConcatenationUID",
    "DimensionOrganizationUID",
)
PERSON_AND_TIME_VRS = ("PN", "DA", "TM", "DT")
# DICOM's codes for what was done (CID 7050)
BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")


def phi_present(ds) -> tuple[str, ...]:
    """Keywords of identifying attributes present with a non-empty value (in sequences too),
    plus 'private elements' when the header has any. Values are never returned: the report
    must not spread what it finds."""
    found: set[str] = set()

    def visit(dataset, elem) -> None:
        if elem.tag.is_private:
            found.add("private elements")
        elif elem.value in (None, "", b"") or (elem.VR == "SQ" and not len(elem.value)):
            return
        elif elem.VR in PERSON_AND_TIME_VRS or elem.keyword in IDENTIFYING:
            found.add(elem.keyword or str(elem.tag))

    ds.walk(visit)
    return tuple(sorted(found))


def deidentify_dataset(ds, new_uid: Callable[[str], str], *, cropped: bool) -> None:
    """Applies the header part of the basic profile to ``ds`` in place: private elements,
    person names, dates/times and the identifying attributes removed (emptied where the IOD
    requires them), instance UIDs replaced through ``new_uid`` (one mapping for a whole cohort,
    so references between files survive). PatientName and PatientID are emptied: a file's link
    to its pseudonym is the manifest row, and to the patient the mapping file kept apart. The
    de-identification is recorded as the standard asks."""
    from pydicom.dataset import Dataset  # noqa: PLC0415

    ds.remove_private_tags()

    def visit(dataset, elem) -> None:
        if elem.keyword in INSTANCE_UIDS and elem.value:
            elem.value = new_uid(str(elem.value))
        elif elem.keyword in KEPT_EMPTY:
            elem.value = ""
        elif elem.VR in PERSON_AND_TIME_VRS or elem.keyword in IDENTIFYING:
            del dataset[elem.tag]

    ds.walk(visit)
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = ds.PatientName = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "lnm-jax: PS3.15 basic profile" + ("; cropped to scan region" if cropped else "")
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE
    ds.DeidentificationMethodCodeSequence = [code]
