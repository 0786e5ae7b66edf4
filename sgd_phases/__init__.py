"""sgd_phases: does SGD learn functions of increasing complexity? (Kalimeris et al., 2019).

Submodules are imported on demand (``from sgd_phases import mutual_info``) so that importing the
package stays cheap.
"""

__version__ = "0.1.0"
