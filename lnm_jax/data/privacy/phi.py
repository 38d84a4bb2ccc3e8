"""Identifying information in DICOM headers (PS3.15 Annex E, Basic Application Level
Confidentiality Profile): what ``validate`` reports and what ``deidentify`` removes.

The profile's table lists ~600 attributes; an ultrasound header carries a few dozen of them.
``validate`` reports what it finds generically where the standard's categories are: every
person name (VR PN), every date, time and date-time (DA, TM, DT) and every private element,
in nested sequences too, plus the identifying keywords below. ``deidentify`` does not trust any
list of what to remove: it keeps only :data:`RETAINED` (what an ultrasound image needs to be
read and framed) and removes everything else at every depth.
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


# What a de-identified copy keeps: the attributes an ultrasound image needs to be read and
# framed as the original (image pixel module, cine timing, ultrasound regions, SOP class and
# modality, compression history; no free text, not even the contrast agent's name) and none
# that can name a person, place, device or time. Not kept, though the basic profile would: an
# ICC profile (the copy's pixels are written as shown, the profile applied: kept, it had been
# applied twice by every reader of the copy; and its bytes can carry text), BodyPartExamined (a
# code string anyone can type into); ImageType keeps its two enumerated values, Laterality an
# enumerated one, SeriesNumber and InstanceNumber are emptied (numbers that can be an
# accession's or a record's; helper-83). Everything else is removed at every depth, whatever its tag or VR: an
# allow-list, so that an attribute no list foresaw (free text, an operator's address inside a
# sequence, an overlay comment, a creator or device UID) cannot survive. The PS3.15 Annex E
# basic profile's removals are a subset of what this drops; its "retain" options (dates,
# device identity, descriptions) are not offered.
RETAINED = frozenset(
    {
        # SOP common, general series/image (identity replaced or emptied below)
        "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
        "Modality", "ImageType", "InstanceNumber", "SeriesNumber", "Laterality",
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
        "ReferringPhysicianName", "StudyDate", "StudyTime", "BurnedInAnnotation",
        "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
        # image pixel module
        "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
        "HighBit", "PixelRepresentation", "PlanarConfiguration", "PixelAspectRatio", "PixelData",
        "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
        "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
        "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
        "RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth", "PresentationLUTShape",
        # multi-frame and cine
        "NumberOfFrames", "FrameIncrementPointer", "FrameTime", "FrameTimeVector", "CineRate",
        "RecommendedDisplayFrameRate", "FrameDelay", "ActualFrameDuration",
        # ultrasound regions (the scan region, physical scale) and acquisition numbers
        "SequenceOfUltrasoundRegions", "RegionSpatialFormat", "RegionDataType", "RegionFlags",
        "RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1",
        "ReferencePixelX0", "ReferencePixelY0", "PhysicalUnitsXDirection", "PhysicalUnitsYDirection",
        "ReferencePixelPhysicalValueX", "ReferencePixelPhysicalValueY", "PhysicalDeltaX", "PhysicalDeltaY",
        "TransducerFrequency", "PulseRepetitionFrequency", "DopplerCorrectionAngle", "SteeringAngle",
        "MechanicalIndex",
        # the de-identification record written below
        "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
        "CodeValue", "CodingSchemeDesignator", "CodeMeaning",
    }
)  # fmt: skip
# File meta keeps only what reading the file needs (its UIDs are replaced or well known).
RETAINED_META = frozenset(
    {"FileMetaInformationVersion", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"}
)


DEIDENTIFICATION_METHOD = "lnm-jax: allow-list, PS3.15 basic profile"
# values an enumerated attribute may keep (anything else is typed in: removed)
LATERALITY = ("R", "L")
EMPTIED = KEPT_EMPTY | {"ReferringPhysicianName", "StudyDate", "StudyTime", "SeriesNumber", "InstanceNumber"}


def deidentify_dataset(ds, new_uid: Callable[[str], str], *, cropped: bool, pixels_clean: bool | None = None) -> None:
    """De-identifies ``ds`` in place: every attribute not in :data:`RETAINED` removed at every
    depth (private elements, free text, nested sequences, overlays, device and creator UIDs
    included); the type 2 identity attributes kept present and empty; study, series and SOP
    instance UIDs replaced through ``new_uid`` (one mapping for a whole cohort, so references
    between files survive); the 128-byte preamble zeroed; the file meta reduced to what reading
    needs, with this project's implementation UID. PatientName and PatientID are empty: a
    file's link to its pseudonym is the manifest row, and to the patient the mapping file kept
    apart. The de-identification is recorded as the standard asks: ``PatientIdentityRemoved``
    YES where ``pixels_clean`` (default: ``cropped``), i.e. every pixel kept lies in a scan
    region or a crop chosen to hold the picture alone; NO where pixels around it, where scanners
    burn in names, IDs and dates, are kept (PS3.3 C.7.1.1.1.1: YES says identity is removed from
    the attributes *and* the pixel data). A file without a SOP instance UID gets a new one."""
    from pydicom.dataset import Dataset  # noqa: PLC0415
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID  # noqa: PLC0415

    def prune(dataset) -> None:
        for elem in list(dataset):
            if elem.tag.is_private or elem.keyword not in RETAINED:
                del dataset[elem.tag]
            elif elem.VR == "SQ":
                for item in elem.value:
                    prune(item)

    from pydicom.uid import generate_uid  # noqa: PLC0415

    prune(ds)
    for keyword in INSTANCE_UIDS:
        if keyword in ds and ds[keyword].value:
            ds[keyword].value = new_uid(str(ds[keyword].value))
    if not ds.get("SOPInstanceUID"):  # (type 1, yet absent from some exports: deidentify had failed on it)
        ds.SOPInstanceUID = generate_uid()
    for keyword in EMPTIED:
        if keyword in ds:
            ds[keyword].value = ""
    if "ImageType" in ds:  # value 1 ORIGINAL/DERIVED, 2 PRIMARY/SECONDARY; 3 on are free for the maker's terms
        values = list(ds.ImageType) if ds["ImageType"].VM > 1 else [ds.ImageType]
        kept = [v for v in values[:2] if v in ("ORIGINAL", "DERIVED", "PRIMARY", "SECONDARY")]
        ds.ImageType = kept if len(kept) == 2 else ["DERIVED", "PRIMARY"]  # (type 1: never left empty)
    if "Laterality" in ds and ds.Laterality not in LATERALITY:
        del ds["Laterality"]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for elem in list(meta):
            if elem.keyword not in RETAINED_META:
                del meta[elem.tag]
        if "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.preamble = b"\x00" * 128
    ds.PatientID = ds.PatientName = ""
    clean = cropped if pixels_clean is None else pixels_clean
    ds.PatientIdentityRemoved = "YES" if clean else "NO"
    # (LO: at most 64 characters)
    done = ("; cropped" if cropped else "") if clean else "; outside scan kept" if cropped else "; not cropped"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD + done  # at most 64 characters (LO): tested
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE
    ds.DeidentificationMethodCodeSequence = [code]
