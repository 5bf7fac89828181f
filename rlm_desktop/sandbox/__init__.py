"""Code execution out of process: host side (spawn, protocol, watchdog) and worker side."""
