"""The paper's published numbers (the paper's tables), beside which the report sets ours.

Table 1 was an image in the paper and its cells are not in the text; the text quotes the
Rank-1 gains of UP-ReID over MoCo for MGN and BoT, and Table 8 gives MGN + UP-ReID.
"""

from __future__ import annotations

# Table 1: (method, init, dataset) -> (mAP, R1); only the cells the text states.
TABLE1: dict[tuple[str, str, str], tuple[float, float]] = {
    ("mgn", "upreid", "cuhk03"): (85.3, 87.6),
    ("mgn", "upreid", "market1501"): (91.1, 97.1),
    ("mgn", "upreid", "msmt17"): (63.3, 84.3),
}
# Rank-1 gain of UP-ReID over MoCo quoted in Sec. 4.2: method -> dataset -> points.
TABLE1_R1_GAIN: dict[str, dict[str, float]] = {
    "mgn": {"cuhk03": 12.2, "market1501": 0.7, "personx": 1.9, "msmt17": 0.4},
    "bot": {"cuhk03": 2.8, "market1501": 0.2, "personx": 0.7, "msmt17": 2.7},
}
# Table 2 (SpCL): init -> setting -> (mAP, R1).
TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "insup": {"M": (73.1, 88.1), "P2M": (73.8, 88.0)},
    "moco": {"M": (72.2, 87.8), "P2M": (72.4, 88.4)},
    "upreid": {"M": (75.1, 90.0), "P2M": (78.7, 90.9)},
}
# Table 4 (MGN, CUHK03): variant -> (mAP, R1).
TABLE4: dict[str, tuple[float, float]] = {
    "moco": (74.7, 75.4),
    "cc": (79.1, 80.2),
    "icc": (81.4, 83.6),
    "upreid": (85.3, 87.6),
}
# Table 5 (MGN, CUHK03): variant -> (mAP, R1, R5).
TABLE5: dict[str, tuple[float, float, float]] = {
    "nohm": (80.7, 83.1, 93.1),
    "upreid": (85.3, 87.6, 95.4),
}
# Table 6 (MGN, CUHK03): variant -> (mAP, R1, R5).
TABLE6: dict[str, tuple[float, float, float]] = {
    "n4": (81.3, 83.1, 92.6),
    "n12": (80.7, 82.2, 92.4),
    "upreid": (85.3, 87.6, 95.4),
}
# Table 7 (PCB): init -> dataset -> (mAP, R1).
TABLE7: dict[str, dict[str, tuple[float, float]]] = {
    "insup": {"cuhk03": (59.5, 69.9), "market1501": (78.0, 92.6), "personx": (80.9, 92.7)},
    "moco": {"cuhk03": (58.3, 72.8), "market1501": (79.3, 92.9), "personx": (80.7, 92.9)},
    "upreid": {"cuhk03": (60.1, 74.1), "market1501": (80.0, 93.1), "personx": (81.7, 93.2)},
}
# Table 8 (and its subset, Table 3): method -> (CUHK03 mAP, R1, Market mAP, R1, MSMT17 mAP, R1).
NA = None
TABLE8: dict[str, tuple[float | None, ...]] = {
    "PCB (ECCV'18)": (57.5, 63.7, 81.6, 93.8, NA, NA),
    "MGN (ACM MM'18)": (70.5, 71.2, 86.9, 95.7, NA, NA),
    "ABDNet (ICCV'19)": (NA, NA, 88.3, 95.6, 60.8, 82.3),
    "BDB (ICCV'19)": (76.7, 79.4, 86.7, 95.3, NA, NA),
    "OSNet (ICCV'19)": (67.8, 72.3, 84.9, 94.8, 52.9, 78.7),
    "P2Net (ICCV'19)": (73.6, 78.3, 85.6, 95.2, NA, NA),
    "SCAL (ICCV'19)": (72.3, 74.8, 89.3, 95.8, NA, NA),
    "DSA (CVPR'19)": (75.2, 78.9, 87.6, 95.7, NA, NA),
    "DGNet (CVPR'19)": (NA, NA, 86.0, 94.8, 52.3, 77.2),
    "GCP (AAAI'20)": (75.6, 77.9, 88.9, 95.2, NA, NA),
    "SAN (AAAI'20)": (76.4, 80.1, 88.0, 96.1, 55.7, 79.2),
    "ISP (ECCV'20)": (74.1, 76.5, 88.6, 95.3, NA, NA),
    "GASM (ECCV'20)": (NA, NA, 84.7, 95.3, 52.5, 79.5),
    "RGA-SC (CVPR'20)": (77.4, 81.1, 88.4, 96.1, NA, NA),
    "HOReID (CVPR'20)": (NA, NA, 84.9, 94.2, NA, NA),
    "AMD (ICCV'21)": (NA, NA, 87.1, 94.8, NA, NA),
    "PGFL-KD (ICCV'21)": (NA, NA, 87.2, 95.3, NA, NA),
    "TransReID (ICCV'21)": (NA, NA, 89.5, 95.2, 67.4, 85.3),
    "PAT (CVPR'21)": (NA, NA, 88.0, 95.4, NA, NA),
    "MGN + UP-ReID (paper)": (85.3, 87.6, 91.1, 97.1, 63.3, 84.3),
}
TABLE3_ROWS = tuple(
    k
    for k in TABLE8
    if k
    not in (
        "MGN (ACM MM'18)",
        "ABDNet (ICCV'19)",
        "BDB (ICCV'19)",
        "DGNet (CVPR'19)",
        "PGFL-KD (ICCV'21)",
    )
)
