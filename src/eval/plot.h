// sickle/eval/plot.h — small line charts as SVG (and PNG through rsvg-convert when present).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace sickle {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;
};

struct PlotPanel {
  std::string title, x_label, y_label;
  bool log_y = false;
  std::vector<PlotSeries> series;
};

// Panels side by side, shared legend (one colour per series name, same across panels).
std::string render_svg(const std::vector<PlotPanel>& panels, const std::string& caption);

// Writes `svg` to path.svg and, if rsvg-convert is on PATH, path.png. Returns whether the PNG
// was written.
bool write_plot_files(const std::string& svg, const std::filesystem::path& stem);

}  // namespace sickle
