"""The control layer around the native core: protection table, fast-path buffers, loops."""
