"""ramdisk tests."""
