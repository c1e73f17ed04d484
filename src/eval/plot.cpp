#include "eval/plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>

#include "base/error.h"
#include "base/log.h"

namespace sickle {
namespace {

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#7f7f7f",
                         "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"};

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

// "Nice" tick step for a range (1, 2 or 5 x 10^k).
double nice_step(double range, int target) {
  double raw = range / std::max(1, target);
  double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

std::string fmt_num(double v) {
  if (std::fabs(v) >= 1000) return fmt::format("{:.0f}", v);
  if (std::fabs(v) >= 10) return fmt::format("{:.4g}", v);
  return fmt::format("{:.3g}", v);
}

}  // namespace

std::string render_svg(const std::vector<PlotPanel>& panels, const std::string& caption) {
  const double pw = 460, ph = 340, ml = 70, mr = 20, mt = 40, mb = 55;
  const double legend_h = 30;
  double W = pw * double(panels.size()), H = ph + legend_h + 30;
  std::map<std::string, int> color_of;
  for (const auto& p : panels)
    for (const auto& s : p.series)
      if (!color_of.count(s.name)) color_of.emplace(s.name, int(color_of.size()));
  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" viewBox=\"0 0 {:.0f} "
      "{:.0f}\" "
      "font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\">\n<rect width=\"100%\" "
      "height=\"100%\" fill=\"white\"/>\n",
      W, H, W, H);
  for (size_t pi = 0; pi < panels.size(); ++pi) {
    const auto& p = panels[pi];
    double ox = pw * double(pi);
    double x0 = ox + ml, x1 = ox + pw - mr, y0 = mt, y1 = ph - mb;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    auto ty = [&](double v) { return p.log_y ? std::log10(std::max(v, 1e-12)) : v; };
    for (const auto& s : p.series)
      for (size_t i = 0; i < s.x.size(); ++i) {
        if (!std::isfinite(s.y[i])) continue;
        xmin = std::min(xmin, s.x[i]);
        xmax = std::max(xmax, s.x[i]);
        ymin = std::min(ymin, ty(s.y[i]));
        ymax = std::max(ymax, ty(s.y[i]));
      }
    if (!std::isfinite(xmin)) {
      xmin = 0;
      xmax = 1;
      ymin = 0;
      ymax = 1;
    }
    if (xmax == xmin) {
      xmin -= 1;
      xmax += 1;
    }
    if (ymax == ymin) {
      ymin -= 1;
      ymax += 1;
    }
    double ypad = (ymax - ymin) * 0.05;
    ymin -= ypad;
    ymax += ypad;
    auto sx = [&](double v) { return x0 + (v - xmin) / (xmax - xmin) * (x1 - x0); };
    auto sy = [&](double v) { return y1 - (ty(v) - ymin) / (ymax - ymin) * (y1 - y0); };
    o += fmt::format(
        "<text x=\"{:.1f}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\" "
        "font-weight=\"bold\">{}</text>\n",
        (x0 + x1) / 2, esc(p.title));
    o += fmt::format(
        "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" "
        "stroke=\"#333\"/>\n",
        x0, y0, x1 - x0, y1 - y0);
    // x ticks at the data's x values (experts kept), which are few.
    std::vector<double> xs;
    for (const auto& s : p.series) xs.insert(xs.end(), s.x.begin(), s.x.end());
    std::sort(xs.begin(), xs.end());
    xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
    for (double v : xs) {
      o +=
          fmt::format("<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1:.1f}\" y2=\"{2:.1f}\" stroke=\"#ddd\"/>\n",
                      sx(v), y0, y1);
      o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", sx(v), y1 + 16,
                       fmt_num(v));
    }
    double step = nice_step(ymax - ymin, 5);
    for (double v = std::ceil(ymin / step) * step; v <= ymax; v += step) {
      double yy = y1 - (v - ymin) / (ymax - ymin) * (y1 - y0);
      double label = p.log_y ? std::pow(10.0, v) : v;
      o +=
          fmt::format("<line x1=\"{0:.1f}\" x2=\"{1:.1f}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#eee\"/>\n",
                      x0, x1, yy);
      o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", x0 - 6, yy + 4,
                       fmt_num(label));
    }
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", (x0 + x1) / 2,
                     y1 + 36, esc(p.x_label));
    o += fmt::format(
        "<text transform=\"translate({:.1f},{:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        ox + 16, (y0 + y1) / 2, esc(p.y_label + (p.log_y ? " (log scale)" : "")));
    for (const auto& s : p.series) {
      const char* c = kColors[color_of[s.name] % 8];
      std::string pts;
      std::vector<size_t> idx(s.x.size());
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
      std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return s.x[a] < s.x[b]; });
      for (size_t i : idx)
        if (std::isfinite(s.y[i])) pts += fmt::format("{:.1f},{:.1f} ", sx(s.x[i]), sy(s.y[i]));
      o += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>\n", pts, c);
      for (size_t i : idx)
        if (std::isfinite(s.y[i]))
          o += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"/>\n", sx(s.x[i]),
                           sy(s.y[i]), c);
    }
  }
  double lx = 20, ly = ph + 12;
  for (const auto& [name, ci] : color_of) {
    o += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"18\" height=\"4\" fill=\"{}\"/>\n", lx, ly + 4,
                     kColors[ci % 8]);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", lx + 24, ly + 10, esc(name));
    lx += 30 + 8 * double(name.size()) + 20;
  }
  o += fmt::format("<text x=\"20\" y=\"{:.1f}\" fill=\"#555\" font-size=\"11\">{}</text>\n", H - 10,
                   esc(caption));
  o += "</svg>\n";
  return o;
}

bool write_plot_files(const std::string& svg, const std::filesystem::path& stem) {
  std::filesystem::path svg_path = stem;
  svg_path += ".svg";
  {
    std::ofstream out(svg_path);
    if (!out) fail("{}: cannot write", svg_path.string());
    out << svg;
  }
  std::filesystem::path png_path = stem;
  png_path += ".png";
  if (std::system("command -v rsvg-convert >/dev/null 2>&1") != 0) {
    log_warn("rsvg-convert not found (Debian package librsvg2-bin): wrote {} only", svg_path.string());
    return false;
  }
  std::string cmd = fmt::format("rsvg-convert -b white -o '{}' '{}'", png_path.string(), svg_path.string());
  if (std::system(cmd.c_str()) != 0) {
    log_warn("rsvg-convert failed; wrote {} only", svg_path.string());
    return false;
  }
  return true;
}

}  // namespace sickle
