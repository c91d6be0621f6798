"""ks_runtime: the torch-free half of Knowledge-Spreader.

The shared core (AU sets, preprocessing, key-slot policy, SynthAU generator, F1) that training and
deployment both import, and the streaming deployment engine. Imports no torch and none of our other
packages except cpp_ext (DESIGN.md, dependency direction).
"""

__version__ = "0.1.0"
