"""TRIPLEX (Chung et al., CVPR 2024): target, neighbour and global views fused by cross-attention (in progress)."""
