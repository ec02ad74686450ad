import Foundation

/// One bar of a chart: where it goes (`value`), its value as text (`valueText`, exact, for the
/// axis) and what its tooltip says (`display`).
public struct ChartPoint: Sendable, Hashable {
    public var label: String
    public var value: Double
    public var valueText: String
    public var display: String

    public init(label: String, value: Double, valueText: String, display: String) {
        self.label = label
        self.value = value
        self.valueText = valueText
        self.display = display
    }
}

/// Charts drawn as SVG on the server: no script, no third-party asset, and nothing the page's
/// Content-Security-Policy has to allow. Colours come from classes the stylesheet sets. Every
/// text is escaped here, since the markup is inserted into the page as it is.
public enum SVGChart {
    /// A bar chart of `points` left to right, with the largest value marked on the axis.
    public static func bars(_ points: [ChartPoint], title: String, width: Int = 640, height: Int = 180) -> String {
        let (left, bottom, top) = (56.0, 22.0, 10.0)
        let plotWidth = Double(width) - left - 8
        let plotHeight = Double(height) - bottom - top
        let largest = points.map(\.value).max() ?? 0
        var svg =
            #"<svg class="chart" role="img" viewBox="0 0 \#(width) \#(height)" preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">"#
            + "<title>\(HTML.escape(title))</title>"
        svg += #"<line class="axis" x1="\#(left)" y1="\#(top + plotHeight)" x2="\#(left + plotWidth)" y2="\#(top + plotHeight)"/>"#
        if points.isEmpty || largest <= 0 {
            svg +=
                #"<text class="empty" x="\#(left + plotWidth / 2)" y="\#(top + plotHeight / 2)" text-anchor="middle">Nothing in this period</text>"#
            return svg + "</svg>"
        }
        let maxLabel = points.max { $0.value < $1.value }?.valueText ?? ""
        svg += #"<text class="tick" x="\#(left - 4)" y="\#(top + 8)" text-anchor="end">\#(HTML.escape(maxLabel))</text>"#
        svg += #"<text class="tick" x="\#(left - 4)" y="\#(top + plotHeight)" text-anchor="end">0</text>"#
        let slot = plotWidth / Double(points.count)
        let barWidth = max(1, slot * 0.7)
        let labelEvery = max(1, Int((Double(points.count) / 8).rounded(.up)))
        for (index, point) in points.enumerated() {
            let barHeight = largest > 0 ? max(point.value > 0 ? 1 : 0, plotHeight * point.value / largest) : 0
            let x = left + slot * Double(index) + (slot - barWidth) / 2
            let y = top + plotHeight - barHeight
            svg += #"<rect class="bar" x="\#(format(x))" y="\#(format(y))" width="\#(format(barWidth))" height="\#(format(barHeight))">"#
            svg += "<title>\(HTML.escape(point.label)): \(HTML.escape(point.display))</title></rect>"
            if index % labelEvery == 0 {
                svg += #"<text class="tick" x="\#(format(x + barWidth / 2))" y="\#(Double(height) - 6)" text-anchor="middle">"#
                svg += HTML.escape(point.label) + "</text>"
            }
        }
        return svg + "</svg>"
    }

    static func format(_ value: Double) -> String { String(format: "%.1f", value) }
}

/// Escaping for text put into HTML or SVG by code rather than by a template.
public enum HTML {
    /// By Unicode scalar, not by character: `"` followed by a combining mark is one character
    /// that a character-by-character escaper would let through.
    public static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }
}
