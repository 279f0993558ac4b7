"""SEPAL (Mejia et al., ICCVW 2023): local graphs around each spot, refined by a GNN (in progress)."""
