import { useState } from "preact/hooks";
import { ModelKind, type ModelMetadata } from "../../../../gen/mlmesh/predictor/v1/predictor_pb.js";
import { isDtype, oipDatatypeOf } from "../../../model/tensors.js";
import { useClients } from "../lib/clients";
import { fetchJson } from "../lib/errors";
import { authorization, useSettings } from "../lib/settings";
import { useAction } from "../lib/use-load";
import { ErrorBanner } from "./status";

type Mode = "rows" | "tensors" | "image";

/**
 * A form generated from a served version's signature: for a classifier, a row of labelled
 * number fields per input row, answered by the native Predict with labels and probabilities;
 * for any model, the Open Inference Protocol's JSON tensors (POST /v2/.../infer on the
 * Predictor), prefilled from the signature and the model's sample input.
 */
export function TryIt({ name, served }: { name: string; served: ModelMetadata[] }) {
  const [chosen, setChosen] = useState<number | undefined>(undefined);
  const metadata = served.find((m) => m.version === chosen) ?? served.find((m) => m.aliases.includes("production")) ?? served[0];
  const [mode, setMode] = useState<Mode>("rows");
  if (metadata === undefined) return <p class="muted" data-testid="try-none">No Predictor serves {name} right now.</p>;
  const classifier = metadata.kind === ModelKind.CLASSIFIER;
  const image = metadata.kind === ModelKind.IMAGE;
  const shownMode = mode === "rows" && !classifier ? (image ? "image" : "tensors") : mode === "image" && !image ? "tensors" : mode;
  return (
    <div class="try-it" data-testid="try-it">
      <div class="toolbar">
        <label>
          Version{" "}
          <select data-testid="try-version" value={metadata.version} onChange={(e) => setChosen(Number(e.currentTarget.value))}>
            {served.map((m) => (
              <option value={m.version}>
                v{m.version}
                {m.aliases.length > 0 ? ` (${m.aliases.join(", ")})` : ""}
              </option>
            ))}
          </select>
        </label>
        <fieldset class="inline">
          <legend class="visually-hidden">Input as</legend>
          <label>
            <input type="radio" name="try-mode" data-testid="try-mode-rows" checked={shownMode === "rows"} disabled={!classifier} onChange={() => setMode("rows")} /> rows (Predict)
          </label>
          <label>
            <input type="radio" name="try-mode" data-testid="try-mode-image" checked={shownMode === "image"} disabled={!image} onChange={() => setMode("image")} /> an image file (ClassifyImages)
          </label>
          <label>
            <input type="radio" name="try-mode" data-testid="try-mode-tensors" checked={shownMode === "tensors"} onChange={() => setMode("tensors")} /> JSON tensors (Open Inference Protocol)
          </label>
        </fieldset>
      </div>
      {shownMode === "rows" ? (
        <RowsForm key={`${metadata.name}@${metadata.version}`} metadata={metadata} />
      ) : shownMode === "image" ? (
        <ImageForm key={`${metadata.name}@${metadata.version}`} metadata={metadata} />
      ) : (
        <TensorsForm key={`${metadata.name}@${metadata.version}`} metadata={metadata} />
      )}
    </div>
  );
}

function RowsForm({ metadata }: { metadata: ModelMetadata }) {
  const { predictor } = useClients();
  const { endpoints } = useSettings();
  const action = useAction({ name: "Predictor", url: endpoints.predictorUrl });
  const sample = metadata.sampleInput.map((r) => r.values.map(String));
  const [rows, setRows] = useState<string[][]>(sample.length > 0 ? sample.slice(0, 3) : [metadata.featureNames.map(() => "")]);
  const [answer, setAnswer] = useState<{ label: string; probabilities: number[] }[]>([]);
  const set = (r: number, f: number, v: string) => setRows(rows.map((row, i) => (i === r ? row.map((old, j) => (j === f ? v : old)) : row)));
  return (
    <form
      data-testid="try-rows"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          setAnswer([]);
          // A field that is no number goes out as NaN, for the Predictor to refuse precisely.
          const request = rows.map((row) => ({ values: row.map((v) => (v.trim() === "" ? Number.NaN : Number(v))) }));
          const response = await predictor.predict({ model: metadata.name, version: metadata.version, rows: request });
          setAnswer(response.predictions.map((p) => ({ label: p.label, probabilities: p.probabilities })));
          return undefined;
        });
      }}
    >
      <div class="table-wrap" tabIndex={0}>
        <table>
          <caption class="visually-hidden">Input rows</caption>
          <thead>
            <tr>
              <th scope="col">row</th>
              {metadata.featureNames.map((f) => (
                <th scope="col">{f}</th>
              ))}
              <th scope="col">label</th>
              <th scope="col">probabilities ({metadata.labels.join(" / ")})</th>
              <th scope="col">
                <span class="visually-hidden">remove</span>
              </th>
            </tr>
          </thead>
          <tbody data-testid="try-rows-body">
            {rows.map((row, r) => (
              <tr>
                <td>{r}</td>
                {row.map((v, f) => (
                  <td>
                    <input
                      class="number"
                      inputMode="decimal"
                      size={6}
                      aria-label={`row ${r} ${metadata.featureNames[f]}`}
                      data-testid={`try-${r}-${f}`}
                      value={v}
                      onInput={(e) => set(r, f, e.currentTarget.value)}
                    />
                  </td>
                ))}
                <td data-testid="try-label">{answer[r]?.label ?? ""}</td>
                <td class="small">{answer[r]?.probabilities.map((p) => p.toFixed(4)).join(" / ") ?? ""}</td>
                <td>
                  <button type="button" class="link" aria-label={`Remove row ${r}`} disabled={rows.length === 1} onClick={() => setRows(rows.filter((_, i) => i !== r))}>
                    remove
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div class="buttons">
        <button type="button" data-testid="try-add-row" onClick={() => setRows([...rows, metadata.featureNames.map(() => "")])}>
          Add a row
        </button>
        <button type="submit" class="primary" data-testid="try-predict" disabled={action.busy}>
          Predict
        </button>
      </div>
      <ErrorBanner error={action.error} testId="try-error" />
    </form>
  );
}

/** An image file (picked or dropped) through ClassifyImages: the model's preprocessing runs on the Predictor. */
function ImageForm({ metadata }: { metadata: ModelMetadata }) {
  const { predictor } = useClients();
  const { endpoints } = useSettings();
  const action = useAction({ name: "Predictor", url: endpoints.predictorUrl });
  const [file, setFile] = useState<File | undefined>(undefined);
  const [preview, setPreview] = useState<string | undefined>(undefined);
  const [top, setTop] = useState<{ label: string; score: number }[]>([]);
  const pick = (files: FileList | null) => {
    const chosen = files?.[0];
    if (chosen === undefined) return;
    setFile(chosen);
    setTop([]);
    setPreview(URL.createObjectURL(chosen));
  };
  return (
    <form
      data-testid="try-image"
      class="push"
      onDragOver={(e) => e.preventDefault()}
      onDrop={(e) => {
        e.preventDefault();
        pick(e.dataTransfer?.files ?? null);
      }}
      onSubmit={(e) => {
        e.preventDefault();
        if (file === undefined) return;
        void action.run(async () => {
          const image = new Uint8Array(await file.arrayBuffer());
          const { results } = await predictor.classifyImages({ model: metadata.name, version: metadata.version, images: [image], topK: 5 });
          setTop(results[0].top.map((t) => ({ label: t.label, score: t.score })));
          return undefined;
        });
      }}
    >
      <label>
        Image (PNG, JPEG or WebP) <input type="file" accept="image/png,image/jpeg,image/webp" data-testid="try-image-file" onChange={(e) => pick(e.currentTarget.files)} />
      </label>
      {preview ? <img src={preview} alt={`the chosen image, ${file?.name ?? ""}`} class="preview" /> : null}
      <div class="buttons">
        <button type="submit" class="primary" data-testid="try-classify" disabled={action.busy || file === undefined}>
          Classify
        </button>
      </div>
      <ErrorBanner error={action.error} testId="try-error" />
      {top.length > 0 ? (
        <ol data-testid="try-top" aria-label="Top labels">
          {top.map((t) => (
            <li>
              <strong>{t.label}</strong> {t.score.toFixed(4)}
            </li>
          ))}
        </ol>
      ) : null}
    </form>
  );
}

function TensorsForm({ metadata }: { metadata: ModelMetadata }) {
  const { token, endpoints } = useSettings();
  const action = useAction({ name: "Predictor", url: endpoints.predictorUrl });
  // A classifier's sample rows; any other model gets one entry per dynamic dimension, zeros ("" for strings).
  const sample = metadata.sampleInput.slice(0, 2).map((r) => r.values);
  const inputs = metadata.inputs.length > 0 ? metadata.inputs : metadata.input ? [metadata.input] : [];
  const initial = {
    inputs: inputs.map((input, i) => {
      const shape = input.shape.map((d) => (Number(d) < 0 ? 1 : Number(d)));
      if (i === 0 && sample.length > 0 && shape.length === 2) shape[0] = sample.length;
      const count = shape.reduce((a, b) => a * b, 1);
      const data = i === 0 && sample.length > 0 ? sample.flat() : new Array<number | string | boolean>(count).fill(input.dtype === "string" ? "" : input.dtype === "bool" ? false : 0);
      return { name: input.name, datatype: isDtype(input.dtype) ? oipDatatypeOf[input.dtype] : input.dtype.toUpperCase(), shape, data };
    }),
  };
  const [text, setText] = useState(JSON.stringify(initial, null, 2));
  const [answer, setAnswer] = useState("");
  const url = `${endpoints.predictorUrl}/v2/models/${encodeURIComponent(metadata.name)}/versions/${metadata.version}/infer`;
  return (
    <form
      data-testid="try-tensors"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          setAnswer("");
          const body = await fetchJson<unknown>(url, {
            method: "POST",
            headers: { "content-type": "application/json", ...authorization(token) },
            body: text,
            what: "the Predictor",
          });
          setAnswer(JSON.stringify(body, null, 2));
          return undefined;
        });
      }}
    >
      <label for="try-request">
        Request body of <code>POST {url}</code>
      </label>
      <textarea id="try-request" data-testid="try-request" rows={10} value={text} onInput={(e) => setText(e.currentTarget.value)} />
      <div class="buttons">
        <button type="submit" class="primary" data-testid="try-infer" disabled={action.busy}>
          Infer
        </button>
      </div>
      <ErrorBanner error={action.error} testId="try-error" />
      {answer ? (
        <pre data-testid="try-response" tabIndex={0} aria-label="Response">
          {answer}
        </pre>
      ) : null}
    </form>
  );
}
