"""crbp_panoptic.engine.results: the evaluation a run logged, read back from its log.txt."""

from crbp_panoptic.engine.results import parse_copypaste, read_results

LOG = """[11/29 05:27:41 d2.evaluation.testing]: copypaste: Task: bbox
[11/29 05:27:41 d2.evaluation.testing]: copypaste: AP,AP50,AP75,APs,APm,APl
[11/29 05:27:41 d2.evaluation.testing]: copypaste: nan,nan,nan,nan,nan,nan
[11/29 05:27:41 d2.evaluation.testing]: copypaste: Task: panoptic_seg
[11/29 05:27:41 d2.evaluation.testing]: copypaste: PQ,SQ,RQ,PQ_th,SQ_th,RQ_th,PQ_st,SQ_st,RQ_st
[11/29 05:27:41 d2.evaluation.testing]: copypaste: {pq},48.7,51.0,0.0,0.0,0.0,69.2,81.3,85.1
"""


def test_parse_copypaste_reads_the_last_block_of_each_task():
    tasks = parse_copypaste(LOG.format(pq=41.5) + LOG.format(pq=50.0))
    assert tasks["panoptic_seg"]["PQ"] == 50.0
    assert tasks["panoptic_seg"]["PQ_st"] == 69.2
    assert set(tasks) == {"bbox", "panoptic_seg"}
    assert tasks["bbox"]["AP"] is None  # NaN: nothing detected
    assert parse_copypaste("no results here") == {}


def test_read_results_reads_the_run_folders_log(tmp_path):
    (tmp_path / "log.txt").write_text("training...\n" + LOG.format(pq=12.25))
    assert read_results(str(tmp_path))["panoptic_seg"]["PQ"] == 12.25
    assert read_results(str(tmp_path / "nothing")) == {}
