import { useLocation } from "preact-iso";
import { PageTitle } from "../components/page-title";

export function NotFoundPage() {
  const { path } = useLocation();
  return (
    <section>
      <PageTitle title="Not found" />
      <p>
        The console has no page at <code>{path}</code>. <a href="/models">See the models</a>.
      </p>
    </section>
  );
}
