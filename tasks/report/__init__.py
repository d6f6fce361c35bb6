"""The reproduction report: one self-contained HTML page (and its markdown twin, a Prefect artifact) from a
pipeline run's files, in the LLaVA-Rad paper's structure (Data, Image encoder, Report generation, Ablations,
CheXprompt, Lineage), every number with its CI, its baselines, the paper's figure where the paper publishes
one, and the file it came from. collect.py reads the run, render.py writes the page; `cxrflow report`
(cxrflow_cli/report.py) and the pipeline/ablate flows call them."""
