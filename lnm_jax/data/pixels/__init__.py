"""Readers of pixels: every image file, frame folder, video and DICOM file becomes float pixels here."""
