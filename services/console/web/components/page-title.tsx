import { useEffect } from "preact/hooks";
import type { ComponentChildren } from "preact";

/** The page's one h1 (focusable: focus lands on it after navigation) and the tab's title. */
export function PageTitle({ title, children }: { title: string; children?: ComponentChildren }) {
  useEffect(() => {
    document.title = `${title} · mlmesh console`;
  }, [title]);
  return (
    <div class="page-title">
      <h1 tabIndex={-1}>{title}</h1>
      {children}
    </div>
  );
}
