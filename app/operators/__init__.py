"""Operators of the ArmGate segmentation app, each a thin subclass of a MONAI Deploy App SDK operator."""
