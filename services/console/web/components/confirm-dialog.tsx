import { useEffect, useRef } from "preact/hooks";

/**
 * A modal question (the native <dialog>: focus stays inside, Escape cancels) for changes that
 * move traffic, such as moving an alias. Present in the page only while open: a page may hold
 * several (aliases, rollouts), one asking at a time.
 */
export function ConfirmDialog(props: { open: boolean; title: string; question: string; confirm: string; onAnswer: (yes: boolean) => void }) {
  return props.open ? <OpenDialog {...props} /> : null;
}

function OpenDialog(props: { title: string; question: string; confirm: string; onAnswer: (yes: boolean) => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const element = dialog.current!;
    if (!element.open) element.showModal();
    // Closed before it leaves the page: the browser gives focus back to where it was.
    return () => element.open && element.close();
  }, []);
  return (
    <dialog ref={dialog} data-testid="confirm-dialog" aria-labelledby="confirm-title" onCancel={() => props.onAnswer(false)}>
      <h2 id="confirm-title">{props.title}</h2>
      <p data-testid="confirm-question">{props.question}</p>
      <div class="buttons">
        <button type="button" data-testid="confirm-no" onClick={() => props.onAnswer(false)}>
          Cancel
        </button>
        <button type="button" class="primary" data-testid="confirm-yes" onClick={() => props.onAnswer(true)}>
          {props.confirm}
        </button>
      </div>
    </dialog>
  );
}
