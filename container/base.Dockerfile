# Turns a debootstrapped arm64 root filesystem into an image labelled linux/arm64.
# Built with buildx --platform linux/arm64 (docker import would label it amd64).
FROM scratch
ADD rootfs.tar /
CMD ["/bin/bash"]
