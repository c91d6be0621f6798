"""What training and deployment must agree on: AU sets, preprocessing, the key-slot policy, F1, the bundle
manifest, the alignment template, the result types and the CPU kernels. Imports nothing else of ks_runtime."""
