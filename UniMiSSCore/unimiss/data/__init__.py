"""Images and labelmaps: one small image type, reading CT volumes and radiographs, labelmaps with names and colours."""
from .image import ImageData
from .io import (InputError, atomic_output, colour_table_path, compound_suffix, label_values, read_image,
                 read_labelmap, write_labelmap)
from .labels import Label

__all__ = ["ImageData", "InputError", "Label", "atomic_output", "colour_table_path", "compound_suffix",
           "label_values", "read_image", "read_labelmap", "write_labelmap"]
