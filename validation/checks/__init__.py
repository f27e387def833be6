"""The release gate's checks, run by validation.gate through pytest (one junit test case each)."""
