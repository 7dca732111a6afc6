"""What a run shows a person: best.png, summary.txt, the collage and report.html, rendered from the run's state
and the judges' records. A floor above judges/, so the judges' words reach the pages without storage reaching up."""
