"""cryomtd: detection-free reconstruction of small molecules from cryo-EM micrographs.

Two estimators, shown on 1-D multi-target detection (``cryomtd.mtd1d``) and on 3-D
cryo-EM: autocorrelation analysis (``cryomtd.moments``, ``cryomtd.mom3d``) and
approximate expectation-maximisation (``cryomtd.em3d``). The library never imports
Snakemake; the workflow in ``workflow/`` only wires files to these functions.
"""

__version__ = "0.1.0"
