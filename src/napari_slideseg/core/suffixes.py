"""File suffixes the package reads (no imports: cheap for napari's reader lookup)."""

__all__ = ["ANNOTATION_SUFFIXES", "SLIDE_SUFFIXES"]

#: Formats OpenSlide reads, plus TIFF for the tifffile backend.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
                  ".svslide", ".bif", ".dcm", ".btf")
#: Annotation files, in the order a slide's sidecar is looked for.
ANNOTATION_SUFFIXES = (".xml", ".geojson", ".json")
