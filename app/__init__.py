"""ArmGate multi-organ CT segmentation, a MONAI Deploy App SDK (0.5.1, classic API) application.

Run it from this folder as ``python3 ./__main__.py -i DICOM_DIR -m model.ts -o OUT_DIR`` or from the repo root
as ``python -m app ...``. The modules are imported flat (this folder goes on sys.path) because the image
copies the folder's contents to /opt/<app-name>/, where no ``app`` package exists. Keep this file free of
imports so ``python -m app`` does not load the modules twice under two names.
"""
