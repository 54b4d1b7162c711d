"""Study I/O: DICOM and raster decoding, view identity, folder loading (SPEC section 4)."""
