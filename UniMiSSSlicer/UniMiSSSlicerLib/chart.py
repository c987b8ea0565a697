"""A live chart of fine-tuning: loss and mean validation Dice per epoch, as Slicer plot nodes."""
from __future__ import annotations

import vtk

import slicer

COLUMNS = ("epoch", "loss", "validation Dice")


class TrainingChart:
    """A table node (one row per epoch), two plot series, a chart node and a view node for it, all in the scene.

    `add(metric_event)` appends the epoch the core reports; `remove()` takes every node out again.
    """

    def __init__(self, scene=None, name: str = "UniMiSS fine-tuning"):
        self.scene = scene or slicer.mrmlScene
        self.table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} metrics")
        for column in COLUMNS:
            array = self.table.AddColumn()
            array.SetName(column)
        # vtkMRMLTableNode columns start as strings; these are numbers.
        for column in COLUMNS:
            self.table.SetColumnType(column, vtk.VTK_DOUBLE)
        self.table.SetUseColumnTitleAsColumnHeader(True)
        self.series = {}
        for column, colour in (("loss", (0.85, 0.33, 0.1)), ("validation Dice", (0.0, 0.45, 0.74))):
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
            series.SetAndObserveTableNodeID(self.table.GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            series.SetColor(*colour)
            self.series[column] = series
        self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        for series in self.series.values():
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
        self.chart.SetTitle(name)
        self.chart.SetXAxisTitle("epoch")
        self.chart.SetYAxisTitle("loss / Dice")
        self.view = self.scene.AddNewNodeByClass("vtkMRMLPlotViewNode", f"{name} view")  # for a qMRMLPlotView
        self.view.SetPlotChartNodeID(self.chart.GetID())

    @property
    def nodes(self) -> list:
        return [self.view, self.chart, *self.series.values(), self.table]

    def add(self, event: dict) -> None:
        """Append one `{"event": "metric", "epoch": .., "loss": .., "val_dice": {name: dice}}` event."""
        dice = event.get("val_dice") or {}
        mean_dice = sum(dice.values()) / len(dice) if dice else float("nan")
        table = self.table.GetTable()
        row = self.table.AddEmptyRow()
        for column, value in zip(COLUMNS, (event.get("epoch", row + 1), event.get("loss", float("nan")), mean_dice)):
            table.GetColumnByName(column).SetValue(row, float(value))
        table.Modified()
        self.table.Modified()

    def rows(self) -> list[tuple[float, float, float]]:
        table = self.table.GetTable()
        return [tuple(table.GetColumnByName(c).GetValue(r) for c in COLUMNS) for r in range(table.GetNumberOfRows())]

    def remove(self) -> None:
        for node in self.nodes:
            if node is not None and self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)
