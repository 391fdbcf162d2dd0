"""ramdisk."""
