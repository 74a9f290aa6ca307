"""OCI images: write reproducible layers and image layouts/archives, read and unpack bases.

layer.py   a directory tree → one reproducible layer blob (tar, gzip/zstd), digests
image.py   layer blobs → OCI image layout (+ optional reproducible OCI archive)
source.py  find an image in an OCI layout, OCI archive or docker archive; read its metadata
apply.py   apply layer tar streams onto a root: whiteouts, ownership, no path escapes
unpack.py  unpack_image / inspect_image: the above, with every digest verified
media.py   media types, descriptors, digests, canonical JSON, ref names
"""
