"""armgate: build a MONAI Deploy app for linux/arm64 and gate its release."""
